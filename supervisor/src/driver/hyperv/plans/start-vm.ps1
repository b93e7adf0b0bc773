# slipway-plan: start-vm
# Boots a stopped VM from OsDisk (SCSI 0:0) with its seed (SCSI 0:2). Attaching a new OsDisk to
# a stopped VM is also the swap: the previous differencing disk stays in the VM's directory.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [string] $OsDisk,
    [Parameter(Mandatory)] [string] $Seed
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

# Ours is the VM of this name whose Notes are Slipway's tag; one still being made (NAME:partial)
# is not there yet, and one with other Notes is someone else's: refused.
$tag = 'slipway-node:' + $Name
$named = @(Get-VM | Where-Object { $_.Name -eq $Name })
$foreign = @($named | Where-Object { $_.Notes -ne $tag -and $_.Notes -ne ($tag + ':partial') })
if ($foreign.Count -gt 0) {
    throw "start-vm: a VM named $Name exists that Slipway did not make; rename or remove it"
}
$vm = @($named | Where-Object { $_.Notes -eq $tag })
if ($vm.Count -eq 0) { throw "start-vm: no VM named $Name; create it first" }
$vm = $vm[0]
if ($vm.State.ToString() -ne 'Off') {
    throw "start-vm: VM $Name is $($vm.State.ToString()), not Off; stop it first"
}
foreach ($disk in @(@{ Location = 0; Path = $OsDisk }, @{ Location = 2; Path = $Seed })) {
    $drive = Get-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation $disk.Location
    if ($null -ne $drive) {
        Set-VMHardDiskDrive -VMHardDiskDrive $drive -Path $disk.Path
    } else {
        Add-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation $disk.Location -Path $disk.Path
    }
}
# Seeds are never rewritten in place (Hyper-V grants a VM access to a disk file as it attaches
# it): each has a name of its own, and the ones no longer attached go (they hold tokens).
$seedName = [System.IO.Path]::GetFileName($Seed)
foreach ($old in @(Get-ChildItem -LiteralPath ([System.IO.Path]::GetDirectoryName($Seed)) -File |
        Where-Object { $_.Name -like 'seed*.vhdx' -and $_.Name -ne $seedName })) {
    Remove-Item -LiteralPath $old.FullName -Force
}
$boot = Get-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 0
Set-VMFirmware -VM $vm -FirstBootDevice $boot
Start-VM -VM $vm

# The worker process's command line carries the VM's id; 0 when it is not found.
$id = $vm.Id.ToString()
$worker = @(Get-CimInstance -ClassName Win32_Process |
    Where-Object { $_.Name -eq 'vmwp.exe' -and $_.CommandLine -like "*$id*" })
$workerId = 0
if ($worker.Count -gt 0) { $workerId = [uint32] $worker[0].ProcessId }

$answer = [ordered]@{ state = (Get-VM -Id $vm.Id).State.ToString(); pid = $workerId }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
