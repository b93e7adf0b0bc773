//! A fake `powershell` for a fake Hyper-V host: Hyper-V and PowerShell cannot run here, so the
//! tests put this program where slipwayd's Hyper-V executors expect `powershell` (on PATH of
//! the test's OpenSSH server, or as the Local executor's program). It checks the command line,
//! records each plan and emulates its action; see `tests::hyperv`.

fn main() {
    std::process::exit(tests::hyperv::main(std::env::args().skip(1).collect()));
}
