# slipway-plan: remove-vm
# Purges a node: turns its VM off, removes it, and deletes its directory with every disk in it,
# the state disk included. Removing what is not there is not an error; a VM of that name that
# Slipway did not make is refused, and nothing is removed.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $Directory
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$removed = $false
# Ours is the VM of this name whose Notes are Slipway's tag, finished or still being made
# (NAME:partial); one with other Notes is someone else's: refused, never removed.
$tag = 'slipway-node:' + $Name
$named = @(Get-VM | Where-Object { $_.Name -eq $Name })
$foreign = @($named | Where-Object { $_.Notes -ne $tag -and $_.Notes -ne ($tag + ':partial') })
if ($foreign.Count -gt 0) {
    throw "remove-vm: a VM named $Name exists that Slipway did not make; rename or remove it"
}
foreach ($one in $named) {
    if ($one.State.ToString() -ne 'Off') { Stop-VM -VM $one -TurnOff -Force }
    Remove-VM -VM $one -Force
    $removed = $true
}
if (Test-Path -LiteralPath $Directory) {
    Remove-Item -LiteralPath $Directory -Recurse -Force
    $removed = $true
}

$answer = [ordered]@{ removed = $removed }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
