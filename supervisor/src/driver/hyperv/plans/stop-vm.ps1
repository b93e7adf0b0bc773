# slipway-plan: stop-vm
# Stops a VM: a guest shutdown first, and after TimeoutSeconds the equivalent of pulling the
# plug. Stop-VM runs as a job so that the deadline is ours, not the cmdlet's.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [int] $TimeoutSeconds
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$vm = @(Get-VM | Where-Object { $_.Name -eq $Name })
if ($vm.Count -eq 0) { throw "stop-vm: no VM named $Name" }
$vm = $vm[0]
if ($vm.State.ToString() -eq 'Off') {
    $stopped = 'already-stopped'
} else {
    $job = Stop-VM -VM $vm -Force -AsJob
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ((Get-VM -Id $vm.Id).State.ToString() -ne 'Off' -and (Get-Date) -lt $deadline) {
        Start-Sleep -Seconds 1
    }
    if ((Get-VM -Id $vm.Id).State.ToString() -eq 'Off') {
        $stopped = 'shut-down'
    } else {
        Stop-VM -VM $vm -TurnOff -Force
        $stopped = 'turned-off'
    }
    # The job's own outcome is moot now that the VM is off either way.
    Remove-Job -Job $job -Force
}

$answer = [ordered]@{ stopped = $stopped }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
