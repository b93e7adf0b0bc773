# slipway-plan: create-vm
# Makes the node's Generation 2 VM: fixed memory, no checkpoints, its MAC and VLAN on the
# cluster's switch, Secure Boot with the image's template (None: Secure Boot off), COM1 on a
# named pipe, and its state disk at SCSI 0:1. Its Notes say it is Slipway's: NAME:partial from
# New-VM on, and the bare tag as the very last step, so a run killed midway leaves a VM that the
# next run knows is unfinished: it is removed (its state disk kept) and made again. So is an
# off VM of that name with no Notes at all whose Path is this node's Directory (a run killed
# between New-VM and its first Set-VM). A failure that throws removes what this run made. A
# finished VM is left as it is, and the answer names the settings in which it differs from the
# ones asked for. Any other VM of that name is someone else's: refused.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $Directory,
    [Parameter(Mandatory)] [long] $MemoryBytes,
    [Parameter(Mandatory)] [int] $Processors,
    [Parameter(Mandatory)] [string] $SwitchName,
    [Parameter(Mandatory)] [ValidatePattern('^[0-9A-Fa-f]{12}$')] [string] $MacAddress,
    [Parameter(Mandatory)] [ValidateRange(0, 4094)] [int] $VlanId,
    [Parameter(Mandatory)] [ValidateSet('MicrosoftWindows', 'MicrosoftUEFICertificateAuthority', 'None')] [string] $SecureBootTemplate,
    [Parameter(Mandatory)] [string] $StateDisk,
    [Parameter(Mandatory)] [long] $StateDiskBytes
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$tag = 'slipway-node:' + $Name
$partial = $tag + ':partial'
# Get-VM -Name takes wildcards; an exact comparison never matches a neighbour.
$named = @(Get-VM | Where-Object { $_.Name -eq $Name })
# A VM of this name with no Notes in this node's own directory is one New-VM -Path $Directory
# made: nothing but this node's create-vm puts it there, so it is ours, unfinished. -contains
# compares text case-insensitively, as Windows compares paths; Hyper-V may show the Path with a
# trailing backslash, or as the folder named after the VM that it keeps its files in under -Path.
$here = $Directory.TrimEnd('\')
$homes = @($here, ($here + '\' + $Name))
$unfinished = @($named | Where-Object {
    $_.Notes -eq $partial -or
    (-not $_.Notes -and $_.State.ToString() -eq 'Off' -and $homes -contains $_.Path.TrimEnd('\'))
})
$foreign = @($named | Where-Object { $_.Notes -ne $tag -and $unfinished -notcontains $_ })
if ($foreign.Count -gt 0) {
    throw "create-vm: a VM named $Name exists that Slipway did not make; rename or remove it"
}
if ($named.Count -gt 1) {
    throw "create-vm: $($named.Count) VMs named $Name carry Slipway's notes; remove all but one"
}
$created = $false
$differs = New-Object 'System.Collections.Generic.List[string]'
$vm = $null
if ($named.Count -eq 1 -and $unfinished.Count -eq 1) {
    # Left unfinished by a run that was killed. Remove-VM keeps disk files: the state disk stays.
    if ($named[0].State.ToString() -ne 'Off') { Stop-VM -VM $named[0] -TurnOff -Force }
    Remove-VM -VM $named[0] -Force
} elseif ($named.Count -eq 1) {
    $vm = $named[0]
}
if ($null -eq $vm) {
    $madeDisk = $false
    try {
        $vm = New-VM -Name $Name -Generation 2 -NoVHD -Path $Directory -MemoryStartupBytes $MemoryBytes -SwitchName $SwitchName
        Set-VM -VM $vm -Notes $partial
        Set-VM -VM $vm -ProcessorCount $Processors -StaticMemory -CheckpointType Disabled -AutomaticCheckpointsEnabled $false -AutomaticStartAction Nothing -AutomaticStopAction ShutDown
        $adapter = Get-VMNetworkAdapter -VM $vm
        Set-VMNetworkAdapter -VMNetworkAdapter $adapter -StaticMacAddress $MacAddress
        if ($VlanId -gt 0) {
            Set-VMNetworkAdapterVlan -VMNetworkAdapter $adapter -Access -VlanId $VlanId
        }
        if ($SecureBootTemplate -eq 'None') {
            Set-VMFirmware -VM $vm -EnableSecureBoot Off
        } else {
            Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate $SecureBootTemplate
        }
        # The console and the beacon's serial path: one pipe per node, named after it.
        Set-VMComPort -VM $vm -Number 1 -Path "\\.\pipe\slipway-$Name"
        # The state disk outlives VMs and swaps: made once, never replaced.
        if (-not (Test-Path -LiteralPath $StateDisk)) {
            New-VHD -Path $StateDisk -SizeBytes $StateDiskBytes -Dynamic | Out-Null
            $madeDisk = $true
        }
        Add-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 1 -Path $StateDisk
        # The very last step: from here on the VM is whole.
        Set-VM -VM $vm -Notes $tag
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
} else {
    # A finished VM: what differs is reported, not changed (a running VM cannot take most of it).
    if ($vm.MemoryStartup -ne $MemoryBytes) { $differs.Add('MemoryBytes') }
    if ($vm.ProcessorCount -ne $Processors) { $differs.Add('Processors') }
    $adapters = @(Get-VMNetworkAdapter -VM $vm)
    $access = -1
    if ($adapters.Count -eq 1) {
        if ($adapters[0].SwitchName -ne $SwitchName) { $differs.Add('SwitchName') }
        if ($adapters[0].MacAddress -ne $MacAddress) { $differs.Add('MacAddress') }
        $vlan = Get-VMNetworkAdapterVlan -VMNetworkAdapter $adapters[0]
        $access = 0
        if ($vlan.OperationMode.ToString() -eq 'Access') { $access = $vlan.AccessVlanId }
    } else {
        $differs.Add('SwitchName')
        $differs.Add('MacAddress')
    }
    if ($access -ne $VlanId) { $differs.Add('VlanId') }
    $firmware = Get-VMFirmware -VM $vm
    $template = 'None'
    if ($firmware.SecureBoot.ToString() -eq 'On') { $template = $firmware.SecureBootTemplate }
    if ($template -ne $SecureBootTemplate) { $differs.Add('SecureBootTemplate') }
}

# A .NET string[] serialises as a JSON array; a PowerShell-wrapped array may not on 5.1.
$answer = [ordered]@{ created = $created; differs = $differs.ToArray() }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
