//! What plans answer: the JSON between the begin/end markers, Get-VM's state as text, and the
//! KVP guest exchange items (CIM-XML) the beacon is read from.
