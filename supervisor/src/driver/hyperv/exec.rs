//! Executors: run a [`super::plan::Plan`] on the Hyper-V host and copy files to it.
