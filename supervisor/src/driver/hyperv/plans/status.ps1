# slipway-plan: status
# Reports a VM's state. Every enum becomes its name with .ToString(): ConvertTo-Json would
# write its number, and the numbers differ between Windows versions.
param(
    [Parameter(Mandatory)] [string] $Name
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
    throw "status: a VM named $Name exists that Slipway did not make; rename or remove it"
}
$vm = @($named | Where-Object { $_.Notes -eq $tag })
if ($vm.Count -eq 0) {
    $answer = [ordered]@{ exists = $false }
} else {
    $vm = $vm[0]
    $heartbeat = $null
    if ($null -ne $vm.Heartbeat) { $heartbeat = $vm.Heartbeat.ToString() }
    # The worker process's command line carries the VM's id; 0 when it is not found.
    $id = $vm.Id.ToString()
    $worker = @(Get-CimInstance -ClassName Win32_Process |
        Where-Object { $_.Name -eq 'vmwp.exe' -and $_.CommandLine -like "*$id*" })
    $workerId = 0
    if ($worker.Count -gt 0) { $workerId = [uint32] $worker[0].ProcessId }
    $answer = [ordered]@{
        exists = $true
        state = $vm.State.ToString()
        status = [string] $vm.Status
        uptime = $vm.Uptime.TotalSeconds
        pid = $workerId
        heartbeat = $heartbeat
    }
}
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
