# slipway-plan: drop-os-disks
# Removes a node's old OS disks (os-*.vhdx in its directory) except Keep, the one a rollback may
# still need. Refuses before removing anything when one of them is attached to the VM.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $Directory,
    [Parameter(Mandatory)] [string] $Keep
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

# Keep is a file name in Directory: anything else would keep nothing and remove every disk.
if ($Keep -notlike 'os-*.vhdx' -or $Keep.Contains('\') -or $Keep.Contains('/')) {
    throw "drop-os-disks: Keep must be a file name os-*.vhdx, not $Keep"
}
$attached = @()
# Ours is the VM of this name whose Notes are Slipway's tag; one still being made (NAME:partial)
# is not there yet, and one with other Notes is someone else's: refused.
$tag = 'slipway-node:' + $Name
$named = @(Get-VM | Where-Object { $_.Name -eq $Name })
$foreign = @($named | Where-Object { $_.Notes -ne $tag -and $_.Notes -ne ($tag + ':partial') })
if ($foreign.Count -gt 0) {
    throw "drop-os-disks: a VM named $Name exists that Slipway did not make; rename or remove it"
}
$vm = @($named | Where-Object { $_.Notes -eq $tag })
if ($vm.Count -gt 0) {
    $attached = @(Get-VMHardDiskDrive -VM $vm[0] | ForEach-Object { $_.Path })
}
$drop = @()
if (Test-Path -LiteralPath $Directory) {
    $drop = @(Get-ChildItem -LiteralPath $Directory -File |
        Where-Object { $_.Name -like 'os-*.vhdx' -and $_.Name -ne $Keep })
}
foreach ($disk in $drop) {
    if ($attached -contains $disk.FullName) {
        throw "drop-os-disks: $($disk.FullName) is attached to VM $Name; stop the VM and switch its disk first"
    }
}
$removed = New-Object 'System.Collections.Generic.List[string]'
foreach ($disk in $drop) {
    Remove-Item -LiteralPath $disk.FullName -Force
    $removed.Add($disk.Name)
}

# A .NET string[] serialises as a JSON array; a PowerShell-wrapped array may not on 5.1.
$answer = [ordered]@{ removed = $removed.ToArray() }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
