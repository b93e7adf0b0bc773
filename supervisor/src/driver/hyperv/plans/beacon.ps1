# slipway-plan: beacon
# Reads the VM's KVP guest exchange items (each one CIM-XML text), where the guest publishes its
# beacon as the item named SlipwayBeacon. The VM is found by comparing values in PowerShell,
# never by a WQL filter built from one.
param(
    [Parameter(Mandatory)] [string] $Name
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$exists = $false
$running = $false
$items = New-Object 'System.Collections.Generic.List[string]'
# Ours is the VM of this name whose Notes are Slipway's tag; one still being made (NAME:partial)
# is not there yet, and one with other Notes is someone else's: refused.
$tag = 'slipway-node:' + $Name
$named = @(Get-VM | Where-Object { $_.Name -eq $Name })
$foreign = @($named | Where-Object { $_.Notes -ne $tag -and $_.Notes -ne ($tag + ':partial') })
if ($foreign.Count -gt 0) {
    throw "beacon: a VM named $Name exists that Slipway did not make; rename or remove it"
}
$vm = @($named | Where-Object { $_.Notes -eq $tag })
if ($vm.Count -gt 0) {
    $exists = $true
    $running = $vm[0].State.ToString() -eq 'Running'
}
if ($running) {
    # Msvm_ComputerSystem's Name is the VM's id: unique, where ElementName (the VM's name) need
    # not be, and the host itself is a Msvm_ComputerSystem too.
    $id = $vm[0].Id.ToString()
    $system = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ComputerSystem |
        Where-Object { $_.Name -eq $id })
    if ($system.Count -gt 0) {
        $kvp = @(Get-CimAssociatedInstance -InputObject $system[0] -ResultClassName Msvm_KvpExchangeComponent)
        if ($kvp.Count -gt 0 -and $null -ne $kvp[0].GuestExchangeItems) {
            foreach ($item in $kvp[0].GuestExchangeItems) { $items.Add([string] $item) }
        }
    }
}

# A .NET string[] serialises as a JSON array; a PowerShell-wrapped array may not on 5.1.
$answer = [ordered]@{ exists = $exists; running = $running; items = $items.ToArray() }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
