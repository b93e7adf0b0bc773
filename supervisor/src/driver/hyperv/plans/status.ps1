# slipway-plan: status
# Reports a VM's state. Every enum becomes its name with .ToString(): ConvertTo-Json would
# write its number, and the numbers differ between Windows versions.
param(
    [Parameter(Mandatory)] [string] $Name
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$vm = @(Get-VM | Where-Object { $_.Name -eq $Name })
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
