# slipway-plan: prune-images
# Removes the node images in Images (HEX.vhdx, HEX a 64-hex digest) whose digest Keep does not
# list, except an image that a VM holds or that a differencing disk under Vms names as its
# parent: an OS disk kept for a rollback, attached to nothing, must never lose its parent.
# Files of other names are left alone. Answers the digests of the images removed.
param(
    [Parameter(Mandatory)] [string] $Images,
    [Parameter(Mandatory)] [string] $Vms,
    [Parameter(Mandatory)] [ValidatePattern('^[0-9a-f]{64}(,[0-9a-f]{64})*$')] [string] $Keep
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-StrictMode -Version 3.0

$keep = $Keep.Split(',')
$vmsNow = @(Get-VM)
# Slipway's VMs keep their disks under Vms: without it (a volume offline, a root spelled
# otherwise) the disks resting on images are not known, and nothing is removed.
$ours = @($vmsNow | Where-Object { $_.Notes -like 'slipway-node:*' })
if (-not (Test-Path -LiteralPath $Vms) -and $ours.Count -gt 0) {
    throw "prune-images: $Vms is not there but Slipway's VMs exist; nothing removed"
}
# Every disk any VM holds and each parent down its chain, and every parent a disk under Vms
# names. Only files are followed (a pass-through disk's Path names a physical disk), each once
# (a chain that loops ends), at most 64 deep. A disk Get-VHD cannot read stops the plan before
# anything is removed: what it may hold on to is not known.
$held = New-Object 'System.Collections.Generic.List[string]'
$seen = New-Object 'System.Collections.Generic.HashSet[string]'
foreach ($vm in $vmsNow) {
    foreach ($drive in @(Get-VMHardDiskDrive -VM $vm)) {
        $path = $drive.Path
        $depth = 0
        while ($path -and $depth -lt 64 -and $seen.Add($path.ToLowerInvariant())) {
            $held.Add($path)
            if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { break }
            $path = (Get-VHD -Path $path).ParentPath
            $depth++
        }
    }
}
if (Test-Path -LiteralPath $Vms) {
    $disks = @(Get-ChildItem -LiteralPath $Vms -File -Recurse -Force |
        Where-Object { $_.Name -like '*.vhdx' })
    foreach ($disk in $disks) {
        $vhd = Get-VHD -Path $disk.FullName
        if ($vhd.ParentPath) { $held.Add($vhd.ParentPath) }
    }
}
# Compared by file name alone: an image's name is its digest, so a path that spells the root
# another way (another case, a share, a short name) still keeps its image.
$heldNames = @($held | ForEach-Object { ($_ -split '[\\/]')[-1] })
$removed = New-Object 'System.Collections.Generic.List[string]'
if (Test-Path -LiteralPath $Images) {
    $unkept = @(Get-ChildItem -LiteralPath $Images -File |
        Where-Object { $_.Name -match '^[0-9a-f]{64}\.vhdx$' -and $keep -notcontains $_.BaseName })
    foreach ($image in $unkept) {
        if ($heldNames -contains $image.Name) { continue }
        Remove-Item -LiteralPath $image.FullName -Force
        $removed.Add($image.BaseName.ToLowerInvariant())
    }
}

# A .NET string[] serialises as a JSON array; a PowerShell-wrapped array may not on 5.1.
$answer = [ordered]@{ removed = $removed.ToArray() }
Write-Output '<<<slipway-begin>>>'
Write-Output (ConvertTo-Json -InputObject $answer -Compress)
Write-Output '<<<slipway-end>>>'
