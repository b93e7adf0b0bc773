# slipway-plan: os-disk
# Makes a node's OS disk: a differencing VHDX over a node image. It is made under a temporary
# name and moved into place, so a disk at Path is always whole; an existing one is kept.
param(
    [Parameter(Mandatory)] [string] $Parent,
    [Parameter(Mandatory)] [string] $Path
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$created = $false
if (-not (Test-Path -LiteralPath $Path)) {
    if (-not (Test-Path -LiteralPath $Parent)) {
        throw "os-disk: the node image $Parent is not on this host; upload it first"
    }
    # New-VHD picks the format from the extension, so the temporary name ends in .vhdx too.
    if ($Path -notlike '*.vhdx') { throw "os-disk: $Path does not end in .vhdx" }
    $part = $Path.Substring(0, $Path.Length - 5) + '.part.vhdx'
    # A part left by an interrupted run is incomplete by definition.
    if (Test-Path -LiteralPath $part) { Remove-Item -LiteralPath $part -Force }
    New-VHD -Path $part -ParentPath $Parent -Differencing | Out-Null
    Move-Item -LiteralPath $part -Destination $Path
    $created = $true
}

$answer = [ordered]@{ created = $created }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
