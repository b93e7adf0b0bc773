# slipway-plan: remove-vm
# Purges a node: turns its VM off, removes it, and deletes its directory with every disk in it,
# the state disk included. Removing what is not there is not an error.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $Directory
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$removed = $false
$vm = @(Get-VM | Where-Object { $_.Name -eq $Name })
if ($vm.Count -gt 0) {
    if ($vm[0].State.ToString() -ne 'Off') { Stop-VM -VM $vm[0] -TurnOff -Force }
    Remove-VM -VM $vm[0] -Force
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
