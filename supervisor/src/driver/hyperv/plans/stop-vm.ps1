# slipway-plan: stop-vm
# Stops a VM: a guest shutdown first, and after TimeoutSeconds the equivalent of pulling the
# plug; a guest whose shutdown integration service is not working is turned off at once, and
# the answer says which happened. Stop-VM runs as a job so that the deadline is ours. A VM never
# made, or one a killed create-vm left unfinished (turned off here), is already stopped: nothing
# of the node runs, as QEMU's driver answers for a VM without a process.
param(
    [Parameter(Mandatory)] [string] $Name,
    [Parameter(Mandatory)] [int] $TimeoutSeconds
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
    throw "stop-vm: a VM named $Name exists that Slipway did not make; rename or remove it"
}
foreach ($partial in @($named | Where-Object { $_.Notes -eq ($tag + ':partial') })) {
    if ($partial.State.ToString() -ne 'Off') { Stop-VM -VM $partial -TurnOff -Force }
}
$vm = @($named | Where-Object { $_.Notes -eq $tag })
if ($vm.Count -eq 0) {
    $answer = [ordered]@{ stopped = 'already-stopped' }
    Write-Output '<<<slipway-begin>>>'
    Write-Output (ConvertTo-Json -InputObject $answer -Compress)
    Write-Output '<<<slipway-end>>>'
    return
}
$vm = $vm[0]
# The guest's shutdown integration service, by its component id (its name is translated with
# Windows): without it working, Stop-VM -Force turns the VM off, which is no shutdown.
$shutdown = @(Get-VMIntegrationService -VM $vm | Where-Object {
        ([string] $_.Id) -like '*9F8233AC-BE49-4C79-8EE3-E7E1985B2077' -and $_.Enabled -and
        ([string] $_.PrimaryOperationalStatus) -eq 'Ok' })
if ($vm.State.ToString() -eq 'Off') {
    $stopped = 'already-stopped'
} elseif ($shutdown.Count -eq 0) {
    # Nothing in the guest would hear a shutdown request: waiting for one is pointless.
    Stop-VM -VM $vm -TurnOff -Force
    $stopped = 'turned-off'
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
