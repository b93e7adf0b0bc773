# slipway-plan: create-vm
# Makes the node's Generation 2 VM: fixed memory, no checkpoints, its MAC and VLAN on the
# cluster's switch, Secure Boot with the image's template, COM1 on a named pipe, and its state
# disk at SCSI 0:1. Nothing changes when a VM of that name exists. A failure after New-VM
# removes what this run made, so no half-made VM is left for the next pass to mistake as done.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $Directory,
    [Parameter(Mandatory)] [long] $MemoryBytes,
    [Parameter(Mandatory)] [int] $Processors,
    [Parameter(Mandatory)] [string] $SwitchName,
    [Parameter(Mandatory)] [ValidatePattern('^[0-9A-Fa-f]{12}$')] [string] $MacAddress,
    [Parameter(Mandatory)] [ValidateRange(0, 4094)] [int] $VlanId,
    [Parameter(Mandatory)] [ValidateSet('MicrosoftWindows', 'MicrosoftUEFICertificateAuthority')] [string] $SecureBootTemplate,
    [Parameter(Mandatory)] [string] $StateDisk,
    [Parameter(Mandatory)] [long] $StateDiskBytes
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

# Get-VM -Name takes wildcards; an exact comparison never matches a neighbour.
$existing = @(Get-VM | Where-Object { $_.Name -eq $Name })
$created = $false
if ($existing.Count -eq 0) {
    $vm = $null
    $madeDisk = $false
    try {
        $vm = New-VM -Name $Name -Generation 2 -NoVHD -Path $Directory -MemoryStartupBytes $MemoryBytes -SwitchName $SwitchName
        Set-VM -VM $vm -ProcessorCount $Processors -StaticMemory -CheckpointType Disabled -AutomaticCheckpointsEnabled $false -AutomaticStartAction Nothing -AutomaticStopAction ShutDown
        $adapter = Get-VMNetworkAdapter -VM $vm
        Set-VMNetworkAdapter -VMNetworkAdapter $adapter -StaticMacAddress $MacAddress
        if ($VlanId -gt 0) {
            Set-VMNetworkAdapterVlan -VMNetworkAdapter $adapter -Access -VlanId $VlanId
        }
        Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate $SecureBootTemplate
        # The console and the beacon's serial path: one pipe per node, named after it.
        Set-VMComPort -VM $vm -Number 1 -Path "\\.\pipe\slipway-$Name"
        # The state disk outlives VMs and swaps: made once, never replaced.
        if (-not (Test-Path -LiteralPath $StateDisk)) {
            New-VHD -Path $StateDisk -SizeBytes $StateDiskBytes -Dynamic | Out-Null
            $madeDisk = $true
        }
        Add-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 1 -Path $StateDisk
        $created = $true
    } catch {
        $failure = $_
        try {
            if ($null -ne $vm) { Remove-VM -VM $vm -Force }
            if ($madeDisk) { Remove-Item -LiteralPath $StateDisk -Force }
        } catch {
            throw "create-vm failed: $failure; removing the half-made VM failed too: $_"
        }
        throw $failure
    }
}

$answer = [ordered]@{ created = $created }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
