<#
.SYNOPSIS
Slipway's first-boot agent for windows-node (Windows Server 2022, Windows PowerShell 5.1).

.DESCRIPTION
Placed by the builder at C:\ProgramData\Slipway\firstboot.ps1. Three modes, each run as SYSTEM:

- Install (from C:\Windows\Setup\Scripts\SetupComplete.cmd, once, at the end of Windows Setup):
  registers two startup tasks under \Slipway\ (FirstBoot: -Mode Run; Beacon: -Mode Beacon) and
  starts them. It returns at once, so Setup is not held up.
- Run: the first boot proper, in ordered durable steps. The next step to run is kept in
  firstboot.state (JSON, replaced whole), so a run after a reboot, a crash or a failure resumes
  there. Steps: identity, seed, hostname, network, containers (with the one reboot), containerd,
  kubelet, join, done. A failure stops the run with its reason in firstboot.log and in the state
  (the Beacon then says "failed"); the FirstBoot task stays registered, so the next boot retries
  the step that failed. After "done" the task removes itself.
- Beacon: started at every boot. First it finds the state disk (below), mounts it and counts the
  boot on it; then every 5 s one JSON line in the format slipwayd reads (supervisor/src/beacon.rs)
  on COM1 (on Hyper-V a named pipe on the host) and as the Hyper-V KVP item SlipwayBeacon. Silent
  until the seed has been read (before that it has no kubeadm digest to show).

The node's identity lives on its state disk, not on the OS disk: the VHDX slipwayd attaches at
SCSI controller 0, location 1, which outlives image swaps (a swap gives the VM a new OS disk). The
Beacon brings it online, formats it (GPT, one NTFS volume labelled SLIPWAY-STATE) only when it is
blank, and mounts it at C:\ProgramData\Slipway\state (SYSTEM and Administrators only). The node
id (a UUID made on the first boot that finds the disk usable) and the boot count are kept there,
so a swap keeps the id and counts on. What was found goes into the beacon's state_disk with
linux-node's words: mounted, formatted (it was blank), unreadable (something else is on it, or it
would not mount: left untouched) or missing; without a usable state disk the beacon carries no
node id and a boot count of 0.

The seed is slipwayd's NoCloud volume labelled CIDATA: meta-data, network-config (v2, one
ethernet), kubeadm.yaml (a JoinConfiguration holding the bootstrap token: copied with an ACL for
SYSTEM and Administrators only, never printed or logged) and kubernetes (the version to run).
#>
[CmdletBinding()]
param(
    [ValidateSet('Install', 'Run', 'Beacon')]
    [string] $Mode = 'Run',
    # Where the agent keeps its files; the builder places it here too.
    [string] $Root = 'C:\ProgramData\Slipway'
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$Script:Steps = @('identity', 'seed', 'hostname', 'network', 'containers', 'containerd', 'kubelet', 'join', 'done')
$Script:TaskPath = '\Slipway\'
$Script:KubeDir = 'C:\k'
$Script:ContainerdPipe = '\\.\pipe\containerd-containerd'
$Script:KubeletConf = 'C:\etc\kubernetes\kubelet.conf'
$Script:KvpKey = 'HKLM:\SOFTWARE\Microsoft\Virtual Machine\Auto'
$Script:KubeletKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\kubelet'
# The state disk: slipwayd attaches it at SCSI controller 0, location 1 (the OS disk is at 0, the
# seed at 2); Hyper-V shows a location to the guest as the LUN. Mounted at StateDir.
$Script:StateLun = 1
# slipwayd attaches the seed disk (CIDATA) at SCSI 0:2.
$Script:SeedLun = 2
$Script:StateLabel = 'SLIPWAY-STATE'
$Script:StateDir = Join-Path -Path $Root -ChildPath 'state'
# GPT partition types (New-Partition's documented GUIDs): what Initialize-Disk and New-Partition
# make, and so all a state disk this agent formatted holds.
$Script:ReservedType = '{e3c9e316-0b5c-4db8-817d-f92df00215ae}'
$Script:BasicDataType = '{ebd0a0a2-b9e5-4433-87c0-68b6b72699c7}'
# A bootstrap token (kubeadm's [a-z0-9]{6}.[a-z0-9]{16}): cut from every line kubeadm prints.
$Script:TokenPattern = '[a-z0-9]{6}\.[a-z0-9]{16}'
# The kubelet's flags that are the same on every node; the kubelet step adds the node's own.
$Script:KubeletFlags = @(
    '--windows-service',
    '--cert-dir=C:\var\lib\kubelet\pki',
    '--config=C:\var\lib\kubelet\config.yaml',
    '--bootstrap-kubeconfig=C:\etc\kubernetes\bootstrap-kubelet.conf',
    '--kubeconfig=C:\etc\kubernetes\kubelet.conf',
    '--container-runtime-endpoint=npipe:////./pipe/containerd-containerd',
    '--cgroups-per-qos=false',
    '--enforce-node-allocatable=',
    '--resolv-conf='
)

function Get-AgentPath {
    param([Parameter(Mandatory)] [string] $Name)
    return (Join-Path -Path $Root -ChildPath $Name)
}

# A file on the state disk (only meaningful once Mount-StateDisk has mounted it).
function Get-StatePath {
    param([Parameter(Mandatory)] [string] $Name)
    return (Join-Path -Path $Script:StateDir -ChildPath $Name)
}

# The FirstBoot and Beacon tasks write this log at the same time, and Add-Content fails while the
# other holds the file: a few tries, then the line is dropped, so a log line lost never turns into
# a failed step or a state disk reported unreadable.
function Write-Log {
    param([Parameter(Mandatory)] [string] $Message)
    $stamp = [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ')
    for ($try = 0; $try -lt 5; $try++) {
        try {
            Add-Content -Path (Get-AgentPath 'firstboot.log') -Value "$stamp $Message" -Encoding UTF8
            return
        } catch {
            Start-Sleep -Milliseconds 200
        }
    }
}

# Writes $Bytes to $Path through a temporary file and a rename, so a reader sees the old file or
# the new one, never half of one. The data reaches the disk before the rename (write-through and
# a flush to disk): after a VM turned off, a renamed file holding zeros would be a node id lost.
function Write-FileAtomic {
    param([Parameter(Mandatory)] [string] $Path, [Parameter(Mandatory)] [AllowEmptyString()] [string] $Text)
    $temp = "$Path.tmp"
    $bytes = [System.Text.UTF8Encoding]::new($false).GetBytes($Text)
    $stream = [System.IO.FileStream]::new($temp, [System.IO.FileMode]::Create, [System.IO.FileAccess]::Write,
        [System.IO.FileShare]::None, 4096, [System.IO.FileOptions]::WriteThrough)
    try {
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Flush($true)
    } finally {
        $stream.Dispose()
    }
    if (Test-Path -LiteralPath $Path) {
        [System.IO.File]::Replace($temp, $Path, [NullString]::Value)
    } else {
        [System.IO.File]::Move($temp, $Path)
    }
}

function Read-State {
    $path = Get-AgentPath 'firstboot.state'
    if (-not (Test-Path -LiteralPath $path)) {
        return [pscustomobject]@{ version = 1; next = $Script:Steps[0]; failed = ''; reboots = 0 }
    }
    $state = Get-Content -LiteralPath $path -Raw | ConvertFrom-Json
    if ($state.version -ne 1 -or $Script:Steps -notcontains $state.next) {
        throw "the state file $path is not one this agent wrote (version $($state.version), step '$($state.next)'): delete it to start first boot over"
    }
    return $state
}

function Save-State {
    param([Parameter(Mandatory)] $State)
    Write-FileAtomic -Path (Get-AgentPath 'firstboot.state') -Text ($State | ConvertTo-Json -Compress)
}

# Lets only SYSTEM and the Administrators group reach $Path (no inherited entries). On a folder
# the entries are inherited by everything made in it later.
function Set-PrivateAcl {
    param([Parameter(Mandatory)] [string] $Path)
    if (Test-Path -LiteralPath $Path -PathType Container) {
        $acl = [System.Security.AccessControl.DirectorySecurity]::new()
        $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    } else {
        $acl = [System.Security.AccessControl.FileSecurity]::new()
        $inherit = [System.Security.AccessControl.InheritanceFlags]::None
    }
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
        $who = [System.Security.Principal.SecurityIdentifier]::new($sid)
        $rule = [System.Security.AccessControl.FileSystemAccessRule]::new($who,
            [System.Security.AccessControl.FileSystemRights]::FullControl, $inherit,
            [System.Security.AccessControl.PropagationFlags]::None,
            [System.Security.AccessControl.AccessControlType]::Allow)
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function ConvertFrom-YamlScalar {
    param([AllowEmptyString()] [string] $Value)
    return $Value.Trim().Trim('"').Trim("'")
}

# meta-data: the two flat keys slipwayd writes.
function Read-MetaData {
    param([Parameter(Mandatory)] [string[]] $Lines)
    $found = @{}
    foreach ($line in $Lines) {
        if ($line -match '^(instance-id|local-hostname):\s*(.*)$') {
            $found[$Matches[1]] = ConvertFrom-YamlScalar $Matches[2]
        }
    }
    foreach ($key in @('instance-id', 'local-hostname')) {
        if (-not $found.ContainsKey($key) -or $found[$key] -eq '') {
            throw "the seed's meta-data has no $key"
        }
    }
    return [pscustomobject]@{ InstanceId = $found['instance-id']; Hostname = $found['local-hostname'] }
}

# network-config version 2 with one ethernet: its MAC, address, default gateway (a route to
# default or 0.0.0.0/0, or gateway4) and nameservers. Block and flow lists are both read.
function Read-NetworkConfig {
    param([Parameter(Mandatory)] [string[]] $Lines)
    $path = [System.Collections.Generic.List[object]]::new()
    $net = @{ Mac = ''; Addresses = @(); Gateway = ''; Nameservers = @(); Ethernets = 0 }
    $routeTo = ''
    $routeVia = ''
    foreach ($raw in $Lines) {
        $line = ($raw -replace '\s#.*$', '').TrimEnd()
        if ($line.Trim() -eq '' -or $line.Trim().StartsWith('#')) { continue }
        $indent = $line.Length - $line.TrimStart().Length
        $text = $line.Trim()
        $item = $false
        if ($text -eq '-' -or $text.StartsWith('- ')) {
            $item = $true
            $text = $text.Substring(1).Trim()
            $indent += 2
        }
        while ($path.Count -gt 0 -and $path[$path.Count - 1].Indent -ge $indent) {
            $path.RemoveAt($path.Count - 1)
        }
        $keys = @($path | ForEach-Object { $_.Key })
        $parent = if ($keys.Count -gt 0) { $keys[$keys.Count - 1] } else { '' }
        $inNameservers = $keys -contains 'nameservers'
        if ($text -notmatch '^([A-Za-z0-9_-]+):\s*(.*)$') {
            if ($item -and $parent -eq 'addresses') {
                $value = ConvertFrom-YamlScalar $text
                if ($inNameservers) { $net.Nameservers += $value } else { $net.Addresses += $value }
            }
            continue
        }
        $key = $Matches[1]
        $value = $Matches[2].Trim()
        if ($value -eq '') {
            if ($keys.Count -eq 1 -and $keys[0] -eq 'ethernets') { $net.Ethernets += 1 }
            $path.Add([pscustomobject]@{ Indent = $indent; Key = $key })
            continue
        }
        if ($value.StartsWith('[')) {
            $list = @($value.Trim('[', ']').Split(',') | ForEach-Object { ConvertFrom-YamlScalar $_ } | Where-Object { $_ -ne '' })
            if ($key -eq 'addresses' -and $inNameservers) { $net.Nameservers += $list }
            elseif ($key -eq 'addresses') { $net.Addresses += $list }
            continue
        }
        $value = ConvertFrom-YamlScalar $value
        switch ($key) {
            'macaddress' { $net.Mac = $value }
            'gateway4' { $net.Gateway = $value }
            'to' { if ($item) { $routeVia = '' }; $routeTo = $value }
            'via' { $routeVia = $value }
        }
        if ($parent -eq 'routes' -and $routeVia -ne '' -and @('default', '0.0.0.0/0') -contains $routeTo) {
            $net.Gateway = $routeVia
        }
    }
    if ($net.Ethernets -ne 1) {
        throw "the seed's network-config names $($net.Ethernets) ethernets; this agent sets up exactly one"
    }
    if ($net.Mac -notmatch '^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$') {
        throw "the seed's network-config has no usable macaddress ('$($net.Mac)')"
    }
    if ($net.Addresses.Count -ne 1 -or $net.Addresses[0] -notmatch '^(\d{1,3}(\.\d{1,3}){3})/(\d{1,2})$') {
        throw "the seed's network-config must give one IPv4 address as A.B.C.D/NN (it gives '$($net.Addresses -join ', ')')"
    }
    $ip = $Matches[1]
    $prefix = [int]$Matches[3]
    foreach ($address in @(@($ip, $net.Gateway) + $net.Nameservers)) {
        if ($address -ne '' -and -not (Test-IPv4 $address)) {
            throw "the seed's network-config holds '$address' where an IPv4 address belongs"
        }
    }
    if ($prefix -lt 1 -or $prefix -gt 32) {
        throw "the seed's network-config gives the prefix length /$prefix"
    }
    return [pscustomobject]@{
        Mac = $net.Mac.ToLowerInvariant(); Address = $ip; Prefix = $prefix
        Gateway = $net.Gateway; Nameservers = @($net.Nameservers)
    }
}

function Test-IPv4 {
    param([Parameter(Mandatory)] [string] $Text)
    $parsed = $null
    return ([System.Net.IPAddress]::TryParse($Text, [ref] $parsed) -and
        $parsed.AddressFamily -eq [System.Net.Sockets.AddressFamily]::InterNetwork -and
        $parsed.ToString() -eq $Text)
}

function Find-SeedRoot {
    for ($try = 0; $try -lt 60; $try++) {
        # A seed attached as a disk is on SCSI, which Windows Server's SAN policy leaves offline:
        # brought online (read only, as it stays) so that its volume gets a drive letter.
        try {
            $disk = Find-ScsiDisk -Lun $Script:SeedLun
            if ($null -ne $disk -and $disk.IsOffline -and -not ($disk.IsBoot -or $disk.IsSystem)) {
                Set-Disk -Number $disk.Number -IsOffline $false
            }
        } catch {
            Write-Log "seed: the seed disk could not be brought online yet: $($_.Exception.Message)"
        }
        $volume = Get-Volume -FileSystemLabel 'CIDATA' -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($null -ne $volume -and $volume.DriveLetter) {
            return "$($volume.DriveLetter):\"
        }
        Start-Sleep -Seconds 2
    }
    throw 'no volume labelled CIDATA was found after 2 minutes: slipwayd attaches the seed as a disk or CD labelled CIDATA; check that this VM was started by slipwayd'
}

# Step seed: reads the seed once and keeps what later steps and the Beacon need. kubeadm.yaml is
# copied byte for byte (its sha256 is what slipwayd checks) behind a private ACL.
function Invoke-SeedStep {
    $seed = Find-SeedRoot
    foreach ($name in @('meta-data', 'network-config', 'kubeadm.yaml', 'kubernetes')) {
        if (-not (Test-Path -LiteralPath (Join-Path $seed $name))) {
            throw "the seed volume $seed has no ${name}: it was not made by a slipwayd that seeds Windows nodes"
        }
    }
    $meta = Read-MetaData -Lines (Get-Content -LiteralPath (Join-Path $seed 'meta-data'))
    $net = Read-NetworkConfig -Lines (Get-Content -LiteralPath (Join-Path $seed 'network-config'))
    if ($meta.Hostname -notmatch '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$') {
        throw "the seed's local-hostname '$($meta.Hostname)' is not a DNS label Windows can take as its name"
    }
    $wanted = (Get-Content -LiteralPath (Join-Path $seed 'kubernetes') -Raw).Trim()
    $image = Get-Content -LiteralPath (Get-AgentPath 'image.json') -Raw | ConvertFrom-Json
    if ($wanted -ne $image.kubernetes) {
        throw "the seed asks for Kubernetes $wanted but this image ($($image.name) $($image.version)) carries $($image.kubernetes): start the node from an image of that version"
    }
    $bytes = [System.IO.File]::ReadAllBytes((Join-Path $seed 'kubeadm.yaml'))
    $target = Get-AgentPath 'kubeadm.yaml'
    # Made empty, locked down, then filled: the token is never in a file others can read.
    [System.IO.File]::WriteAllBytes($target, [byte[]]@())
    Set-PrivateAcl -Path $target
    [System.IO.File]::WriteAllBytes($target, $bytes)
    $digest = (Get-FileHash -LiteralPath $target -Algorithm SHA256).Hash.ToLowerInvariant()
    $text = [System.Text.Encoding]::UTF8.GetString($bytes)
    $endpoint = ''
    if ($text -match '(?m)^\s*apiServerEndpoint:\s*"?([^\s"]+)"?\s*$') { $endpoint = $Matches[1] }
    $facts = [ordered]@{
        hostname = $meta.Hostname; instance_id = $meta.InstanceId; mac = $net.Mac
        address = $net.Address; prefix = $net.Prefix; gateway = $net.Gateway
        nameservers = @($net.Nameservers); endpoint = $endpoint; kubeadm_sha256 = $digest
    }
    Write-FileAtomic -Path (Get-AgentPath 'seed.json') -Text ($facts | ConvertTo-Json -Compress)
    Write-Log "seed read from $seed`: node $($meta.Hostname), address $($net.Address)/$($net.Prefix), kubeadm.yaml sha256 $digest"
}

function Read-Facts {
    return (Get-Content -LiteralPath (Get-AgentPath 'seed.json') -Raw | ConvertFrom-Json)
}

# The disk at LUN Lun on the boot disk's SCSI adapter and bus, or $null. Win32_DiskDrive
# gives each disk's SCSI address as numbers, and its Index is the disk number Get-Disk takes;
# Get-Disk's own Location is a display string with no documented format. The OS disk is on the
# same controller (location 0), so it names the adapter even if the VM had others.
function Find-ScsiDisk {
    param([Parameter(Mandatory)] [uint32] $Lun)
    $boot = Get-Disk | Where-Object { $_.IsBoot } | Select-Object -First 1
    if ($null -eq $boot) { throw 'Get-Disk shows no boot disk' }
    $drives = @(Get-CimInstance -ClassName Win32_DiskDrive)
    $os = $drives | Where-Object { $_.Index -eq $boot.Number } | Select-Object -First 1
    if ($null -eq $os) { throw "Win32_DiskDrive has no drive $($boot.Number), the boot disk" }
    $state = $drives | Where-Object {
        $_.Index -ne $boot.Number -and $_.SCSIPort -eq $os.SCSIPort -and $_.SCSIBus -eq $os.SCSIBus -and
        $_.SCSILogicalUnit -eq $Lun
    } | Select-Object -First 1
    if ($null -eq $state) { return $null }
    return (Get-Disk -Number $state.Index)
}

# The partitions of disk $Number. Get-Partition reports a disk with none as an error (not found):
# that is an answer, an empty list; any other error is not, as reading it as "no partitions"
# would have a disk with data on it formatted.
function Get-DiskPartition {
    param([Parameter(Mandatory)] [uint32] $Number)
    $failed = $null
    $parts = @(Get-Partition -DiskNumber $Number -ErrorAction SilentlyContinue -ErrorVariable failed)
    foreach ($e in @($failed)) {
        if ("$($e.FullyQualifiedErrorId)" -notlike 'CmdletizationQuery_NotFound*') { throw $e }
    }
    if ($parts.Count -eq 0 -and (Get-Disk -Number $Number).NumberOfPartitions -ne 0) {
        throw "Get-Partition lists no partition on disk $Number, which has some"
    }
    return $parts
}

# Finds the state disk, formats it only if it is blank, mounts it at StateDir, and returns what
# was found in the words of the beacon's state_disk (supervisor/src/beacon.rs), with the meaning
# linux-node's init gives them:
#   mounted     Slipway's volume (one NTFS partition labelled StateLabel), as an earlier boot left it;
#   formatted   blank, so formatted on this boot: never initialized, or GPT with nothing but the
#               reserved partition (an earlier boot cut short between Initialize-Disk and
#               New-Partition); to slipwayd a swap that finds this lost the node's state;
#   unreadable  anything else (another layout, file system or label), or it would not mount. Left
#               untouched: formatting it would throw away a node's state;
#   missing     no disk at that LUN.
# Run at every boot (by the Beacon): after a swap the new OS disk's Windows has never seen the
# disk, and a rollback boots an older OS disk whose own first boot is long done.
function Mount-StateDisk {
    $disk = $null
    $why = ''
    # At startup the storage stack (and WMI) may still be finding disks.
    for ($try = 0; $try -lt 30 -and $null -eq $disk; $try++) {
        try {
            $disk = Find-ScsiDisk -Lun $Script:StateLun
            $why = ''
        } catch {
            $why = $_.Exception.Message
        }
        if ($null -eq $disk) { Start-Sleep -Seconds 2 }
    }
    if ($why -ne '') {
        # Not known to be missing: the disks could not be listed.
        Write-Log "state disk: the disks could not be listed for 60 s: $why"
        return 'unreadable'
    }
    if ($null -eq $disk) {
        Write-Log "state disk: none at SCSI LUN $($Script:StateLun) beside the boot disk after 60 s: this node has no id (slipwayd attaches it at SCSI 0:1)"
        return 'missing'
    }
    $number = $disk.Number
    try {
        if ($disk.IsBoot -or $disk.IsSystem) {
            Write-Log "state disk: disk $number at LUN $($Script:StateLun) is a boot or system disk: not used"
            return 'unreadable'
        }
        # Windows Server leaves new disks on a shared bus such as SCSI offline (its SAN policy),
        # and read-only when brought online under it; neither writes to the disk.
        if ($disk.IsOffline) { Set-Disk -Number $number -IsOffline $false }
        $disk = Get-Disk -Number $number
        if ($disk.IsReadOnly) { Set-Disk -Number $number -IsReadOnly $false }
        $disk = Get-Disk -Number $number
        $found = 'mounted'
        if ($disk.PartitionStyle -eq 'RAW') {
            Initialize-Disk -Number $number -PartitionStyle GPT -Confirm:$false
            $found = 'formatted'
        } elseif ($disk.PartitionStyle -ne 'GPT') {
            Write-Log "state disk: disk $number has a $($disk.PartitionStyle) partition table, not the GPT this agent makes: left untouched (inspect it from the host, or remove it to start this node afresh)"
            return 'unreadable'
        }
        $parts = @(Get-DiskPartition -Number $number | Where-Object { $_.GptType -ne $Script:ReservedType })
        if ($parts.Count -eq 0) {
            $partition = New-Partition -DiskNumber $number -UseMaximumSize
            Format-Volume -Partition $partition -FileSystem NTFS -NewFileSystemLabel $Script:StateLabel -Force -Confirm:$false | Out-Null
            $found = 'formatted'
            Write-Log "state disk: disk $number was blank: formatted NTFS, labelled $($Script:StateLabel)"
        } elseif ($found -eq 'formatted' -or $parts.Count -ne 1 -or $parts[0].GptType -ne $Script:BasicDataType) {
            Write-Log "state disk: disk $number holds $($parts.Count) partitions other than the reserved one, not the single data partition this agent makes: left untouched (inspect it from the host, or remove it to start this node afresh)"
            return 'unreadable'
        } else {
            $partition = $parts[0]
            # A disk just brought online shows its volume a moment later: asked again for 30 s
            # before the disk is called unreadable (which fails a swap).
            $volume = $null
            for ($try = 0; $try -lt 15; $try++) {
                try { $volume = Get-Volume -Partition $partition } catch { $volume = $null }
                if ($null -ne $volume -and "$($volume.FileSystem)" -ne '') { break }
                Start-Sleep -Seconds 2
            }
            $fileSystem = ''
            $label = ''
            if ($null -ne $volume) {
                $fileSystem = "$($volume.FileSystem)"
                $label = "$($volume.FileSystemLabel)"
            }
            if ($fileSystem -ne 'NTFS' -or $label -ne $Script:StateLabel) {
                Write-Log "state disk: disk $number holds a volume '$fileSystem' labelled '$label', not NTFS labelled $($Script:StateLabel): left untouched (inspect it from the host, or remove it to start this node afresh)"
                return 'unreadable'
            }
        }
        # Windows keeps a folder mount point from boot to boot (on the OS disk), so it is added
        # only when missing: on the first boot, and on the first boot of a new OS disk. The
        # folder is locked down before the mount, so nothing else can put a file in it, and the
        # volume's root after it.
        $partition = Get-Partition -DiskNumber $number -PartitionNumber $partition.PartitionNumber
        if (@($partition.AccessPaths) -notcontains "$($Script:StateDir)\") {
            if (-not (Test-Path -LiteralPath $Script:StateDir)) {
                New-Item -ItemType Directory -Path $Script:StateDir | Out-Null
            }
            Set-PrivateAcl -Path $Script:StateDir
            Add-PartitionAccessPath -DiskNumber $number -PartitionNumber $partition.PartitionNumber -AccessPath $Script:StateDir -Confirm:$false
        }
        Set-PrivateAcl -Path $Script:StateDir
        Write-Log "state disk: disk $number $found at $($Script:StateDir)"
        return $found
    } catch {
        Write-Log "state disk: disk $number could not be made ready: $($_.Exception.Message)"
        return 'unreadable'
    }
}

# The node's id and this boot's number, kept on the state disk as linux-node keeps them: the id
# made on the first boot that finds the disk usable, the count one more on each. Without a usable
# state disk there is neither, and nothing is kept on the OS disk instead: an id there would be a
# new one after every swap, which slipwayd (it compares ids across a swap) would rightly take for
# lost state, and the state folder on C: would no longer be empty for the mount a later boot makes.
function Update-NodeIdentity {
    param([Parameter(Mandatory)] [string] $StateDisk)
    $none = [pscustomobject]@{ NodeId = ''; BootCount = 0; StateDisk = $StateDisk }
    if (@('mounted', 'formatted') -notcontains $StateDisk) { return $none }
    try {
        $idPath = Get-StatePath 'node-id'
        $nodeId = ''
        if (Test-Path -LiteralPath $idPath) { $nodeId = "$(Get-Content -LiteralPath $idPath -Raw)".Trim() }
        if ($nodeId -eq '') {
            $nodeId = [guid]::NewGuid().ToString()
            Write-FileAtomic -Path $idPath -Text $nodeId
        }
        # It goes into the beacon as is: anything but a UUID's characters is not sent, and a
        # disk whose id cannot be read is no usable state disk (slipwayd then sees the loss).
        if ($nodeId -notmatch '^[0-9a-f-]+$') {
            Write-Log "state disk: $idPath holds no UUID: the state disk is reported unreadable"
            $none.StateDisk = 'unreadable'
            return $none
        }
        $countPath = Get-StatePath 'boot-count'
        $count = 0
        if (Test-Path -LiteralPath $countPath) {
            $text = "$(Get-Content -LiteralPath $countPath -Raw)".Trim()
            if ($text -match '^\d{1,9}$') {
                $count = [int]$text
            } else {
                Write-Log "state disk: $countPath held '$text', not a number: counting again from 1"
            }
        }
        $count += 1
        Write-FileAtomic -Path $countPath -Text "$count"
        return [pscustomobject]@{ NodeId = $nodeId; BootCount = $count; StateDisk = $StateDisk }
    } catch {
        # Mounted but not writable is no usable state disk either.
        Write-Log "state disk: the node id or boot count could not be kept under $($Script:StateDir): $($_.Exception.Message)"
        $none.StateDisk = 'unreadable'
        return $none
    }
}

# Step identity: the built-in Administrator, whose bootstrap password the unattend file carries in
# the clear, given a random one and disabled. (The node's id is on the state disk: the Beacon,
# which runs at every boot, keeps it.)
function Invoke-IdentityStep {
    $admin = Get-LocalUser | Where-Object { $_.SID.Value -like 'S-1-5-21-*-500' } | Select-Object -First 1
    if ($null -ne $admin) {
        $random = [byte[]]::new(32)
        [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($random)
        $password = [System.Security.SecureString]::new()
        foreach ($c in [Convert]::ToBase64String($random).ToCharArray()) { $password.AppendChar($c) }
        Set-LocalUser -SID $admin.SID -Password $password
        Disable-LocalUser -SID $admin.SID
    }
    # The answer file carries that bootstrap password in the clear: Setup is done with it.
    $answer = 'C:\Windows\Panther\Unattend.xml'
    if (Test-Path -LiteralPath $answer) {
        Remove-Item -LiteralPath $answer -Force
    }
    Write-Log 'identity: the built-in Administrator disabled'
}

# Step hostname: renames the computer (pending until the reboot of the containers step). The
# pending DNS name is read too, so a second run does not rename again.
function Invoke-HostnameStep {
    param([Parameter(Mandatory)] $Facts)
    $tcpip = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters'
    $pending = if ($tcpip.PSObject.Properties['NV Hostname']) { $tcpip.'NV Hostname' } else { '' }
    if ([System.Net.Dns]::GetHostName() -ieq $Facts.hostname -or $pending -ieq $Facts.hostname) {
        return $false
    }
    Rename-Computer -NewName $Facts.hostname -Force -WarningAction SilentlyContinue
    Write-Log "hostname: renamed to $($Facts.hostname) (takes effect at the next boot)"
    return $true
}

# Step network: the static address, default route and DNS servers on the adapter with the
# seed's MAC. What is already right is left alone.
function Invoke-NetworkStep {
    param([Parameter(Mandatory)] $Facts)
    $mac = $Facts.mac.ToUpperInvariant().Replace(':', '-')
    $adapter = $null
    for ($try = 0; $try -lt 30 -and $null -eq $adapter; $try++) {
        $adapter = Get-NetAdapter -Physical | Where-Object { $_.MacAddress -eq $mac } | Select-Object -First 1
        if ($null -eq $adapter) { Start-Sleep -Seconds 2 }
    }
    if ($null -eq $adapter) {
        throw "no network adapter has the seed's MAC address $($Facts.mac): check the VM's NIC against host.toml"
    }
    $index = $adapter.ifIndex
    $current = @(Get-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -ErrorAction SilentlyContinue)
    $right = @($current | Where-Object { $_.IPAddress -eq $Facts.address -and $_.PrefixLength -eq $Facts.prefix -and $_.PrefixOrigin -eq 'Manual' })
    if ($right.Count -eq 0) {
        Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Disabled
        foreach ($old in $current) {
            Remove-NetIPAddress -InterfaceIndex $index -IPAddress $old.IPAddress -Confirm:$false -ErrorAction SilentlyContinue
        }
        New-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -IPAddress $Facts.address -PrefixLength $Facts.prefix | Out-Null
    }
    if ($Facts.gateway -ne '') {
        $routes = @(Get-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue)
        if (@($routes | Where-Object { $_.NextHop -eq $Facts.gateway }).Count -eq 0) {
            foreach ($route in $routes) {
                Remove-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -NextHop $route.NextHop -Confirm:$false
            }
            New-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -NextHop $Facts.gateway | Out-Null
        }
    }
    if (@($Facts.nameservers).Count -gt 0) {
        Set-DnsClientServerAddress -InterfaceIndex $index -ServerAddresses @($Facts.nameservers)
    }
    Write-Log "network: $($adapter.Name) ($mac) has $($Facts.address)/$($Facts.prefix) via '$($Facts.gateway)'"
}

# Step containers: the Containers feature. Returns whether Windows needs a restart for it.
function Invoke-ContainersStep {
    $feature = Get-WindowsFeature -Name 'Containers'
    if ($feature.Installed) { return $false }
    $result = Install-WindowsFeature -Name 'Containers'
    if (-not $result.Success) {
        throw "Install-WindowsFeature Containers failed (exit code $($result.ExitCode)): see C:\Windows\Logs\DISM\dism.log"
    }
    Write-Log "containers: feature installed, restart needed: $($result.RestartNeeded)"
    return ($result.RestartNeeded -ne 'No')
}

function Wait-SetupComplete {
    $key = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State'
    for ($try = 0; $try -lt 300; $try++) {
        $state = Get-ItemProperty -Path $key -ErrorAction SilentlyContinue
        if ($null -eq $state -or $state.ImageState -eq 'IMAGE_STATE_COMPLETE') { return }
        Start-Sleep -Seconds 2
    }
    throw 'Windows Setup did not finish within 10 minutes (ImageState is not IMAGE_STATE_COMPLETE): see C:\Windows\Panther\setupact.log'
}

function Invoke-ContainerdStep {
    Set-Service -Name 'containerd' -StartupType Automatic
    Start-Service -Name 'containerd'
    for ($try = 0; $try -lt 60; $try++) {
        if (Test-Path -LiteralPath $Script:ContainerdPipe) {
            Write-Log 'containerd: running'
            return
        }
        Start-Sleep -Seconds 1
    }
    throw "containerd started but its pipe $($Script:ContainerdPipe) did not appear within 60 s: see C:\ProgramData\containerd\containerd.log (the --log-file of its service)"
}

# Step kubelet: the node's own flags on the kubelet service (a service reads no kubeadm-flags.env),
# the directories kubeadm expects, and the kubelet's port open.
function Invoke-KubeletStep {
    param([Parameter(Mandatory)] $Facts)
    foreach ($dir in @('C:\etc\kubernetes\pki', 'C:\etc\kubernetes\manifests', 'C:\var\lib\kubelet\etc\kubernetes', 'C:\var\log\kubelet')) {
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
    }
    $link = 'C:\var\lib\kubelet\etc\kubernetes\pki'
    if (-not (Test-Path -LiteralPath $link)) {
        New-Item -ItemType SymbolicLink -Path $link -Value 'C:\etc\kubernetes\pki' | Out-Null
    }
    # Both values were validated when the seed was read: a DNS label and a dotted IPv4 address.
    $flags = $Script:KubeletFlags + @("--hostname-override=$($Facts.hostname)", "--node-ip=$($Facts.address)")
    $command = '"' + (Join-Path $Script:KubeDir 'kubelet.exe') + '" ' + ($flags -join ' ')
    Set-ItemProperty -Path $Script:KubeletKey -Name 'ImagePath' -Value $command
    if ($null -eq (Get-NetFirewallRule -Name 'SlipwayKubelet' -ErrorAction SilentlyContinue)) {
        New-NetFirewallRule -Name 'SlipwayKubelet' -DisplayName 'kubelet (Slipway)' -Direction Inbound -Protocol TCP -LocalPort 10250 -Action Allow | Out-Null
    }
    Write-Log "kubelet: service flags set for $($Facts.hostname) at $($Facts.address)"
}

# One line of kubeadm's output as it may be logged: any bootstrap token cut out.
function Protect-Line {
    param([AllowEmptyString()] [string] $Line)
    return ($Line -replace $Script:TokenPattern, '<token>')
}

function Invoke-Kubeadm {
    param([Parameter(Mandatory)] [string[]] $Arguments, [Parameter(Mandatory)] [string] $LogPath)
    # kubeadm writes progress to stderr: read it as text, not as errors.
    $ErrorActionPreference = 'Continue'
    & (Join-Path $Script:KubeDir 'kubeadm.exe') @Arguments 2>&1 | ForEach-Object { Protect-Line "$_" } | Add-Content -LiteralPath $LogPath -Encoding UTF8
    return $LASTEXITCODE
}

# Step join: kubeadm join, once (the marker), with up to three tries and a reset between them.
function Invoke-JoinStep {
    $marker = Get-AgentPath 'joined'
    if (Test-Path -LiteralPath $marker) { return }
    $log = Get-AgentPath 'kubeadm-join.log'
    $config = Get-AgentPath 'kubeadm.yaml'
    for ($try = 1; $try -le 3; $try++) {
        Add-Content -LiteralPath $log -Value "--- kubeadm join, try $try" -Encoding UTF8
        $code = Invoke-Kubeadm -Arguments @('join', '--config', $config, '--v=2') -LogPath $log
        if ($code -eq 0) {
            Write-FileAtomic -Path $marker -Text ([DateTime]::UtcNow.ToString('o'))
            Set-Service -Name 'kubelet' -StartupType Automatic
            Write-Log 'join: kubeadm join succeeded'
            return
        }
        Write-Log "join: kubeadm join failed (exit $code, try $try of 3): see $log"
        if ($try -lt 3) {
            Invoke-Kubeadm -Arguments @('reset', '--force', '--cri-socket', 'npipe:////./pipe/containerd-containerd') -LogPath $log | Out-Null
            Start-Sleep -Seconds (30 * $try)
        }
    }
    throw "kubeadm join failed three times: see $log (the token is cut out of it)"
}

function Register-AgentTask {
    param([Parameter(Mandatory)] [string] $Name, [Parameter(Mandatory)] [string] $TaskMode)
    $powershell = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'
    $script = Get-AgentPath 'firstboot.ps1'
    $arguments = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`" -Mode $TaskMode"
    $action = New-ScheduledTaskAction -Execute $powershell -Argument $arguments
    $trigger = New-ScheduledTaskTrigger -AtStartup
    $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
    $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -StartWhenAvailable
    Register-ScheduledTask -TaskName $Name -TaskPath $Script:TaskPath -Action $action -Trigger $trigger -Principal $principal -Settings $settings -Force | Out-Null
}

function Invoke-Install {
    Register-AgentTask -Name 'FirstBoot' -TaskMode 'Run'
    Register-AgentTask -Name 'Beacon' -TaskMode 'Beacon'
    Start-ScheduledTask -TaskName 'Beacon' -TaskPath $Script:TaskPath
    Start-ScheduledTask -TaskName 'FirstBoot' -TaskPath $Script:TaskPath
    Write-Log 'install: tasks FirstBoot and Beacon registered and started'
}

function Invoke-Run {
    $state = Read-State
    $state.failed = ''
    Save-State $state
    Write-Log "run: resuming at step $($state.next)"
    while ($state.next -ne 'done') {
        $step = $state.next
        try {
            $restart = $false
            switch ($step) {
                'identity' { Invoke-IdentityStep }
                'seed' { Invoke-SeedStep }
                'hostname' { $null = Invoke-HostnameStep -Facts (Read-Facts) }
                'network' { Invoke-NetworkStep -Facts (Read-Facts) }
                'containers' {
                    $restart = Invoke-ContainersStep
                    # The rename waits for this reboot too.
                    $tcpip = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters'
                    if ($tcpip.PSObject.Properties['NV Hostname'] -and $tcpip.'NV Hostname' -ine [System.Net.Dns]::GetHostName()) {
                        $restart = $true
                    }
                }
                'containerd' { Invoke-ContainerdStep }
                'kubelet' { Invoke-KubeletStep -Facts (Read-Facts) }
                'join' { Invoke-JoinStep }
            }
        } catch {
            $state.failed = "step ${step}: $($_.Exception.Message)"
            Save-State $state
            Write-Log "FAILED at step ${step}: $($_.Exception.Message) (the next boot tries this step again)"
            exit 1
        }
        $state.next = $Script:Steps[[array]::IndexOf($Script:Steps, $step) + 1]
        if ($restart) {
            if ($state.reboots -ge 1) {
                $state.failed = 'step containers: Windows still asks for a restart after the one first boot allows: see C:\Windows\Logs\DISM\dism.log'
                $state.next = $step
                Save-State $state
                Write-Log "FAILED: $($state.failed)"
                exit 1
            }
            $state.reboots += 1
            Save-State $state
            Wait-SetupComplete
            Write-Log 'run: restarting once for the Containers feature and the new name'
            Restart-Computer -Force
            exit 0
        }
        Save-State $state
    }
    Write-Log 'run: first boot done; the FirstBoot task is removed, the Beacon task stays'
    Unregister-ScheduledTask -TaskName 'FirstBoot' -TaskPath $Script:TaskPath -Confirm:$false
}

# Whether the API server says this node's Ready condition is True (asked with the kubelet's own
# credentials, as linux-node's beacon does).
function Test-NodeReady {
    param([Parameter(Mandatory)] [string] $Name)
    if (-not (Test-Path -LiteralPath $Script:KubeletConf)) { return $false }
    $service = Get-Service -Name 'kubelet' -ErrorAction SilentlyContinue
    if ($null -eq $service -or $service.Status -ne 'Running') { return $false }
    $ErrorActionPreference = 'Continue'
    $kubectl = Join-Path $Script:KubeDir 'kubectl.exe'
    $out = & $kubectl --kubeconfig $Script:KubeletConf --request-timeout=3s get node $Name -o 'jsonpath={.status.conditions}' 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $out) { return $false }
    $conditions = ($out -join '') | ConvertFrom-Json
    return (@($conditions | Where-Object { $_.type -eq 'Ready' -and $_.status -eq 'True' }).Count -eq 1)
}

function Test-TcpReachable {
    param([Parameter(Mandatory)] [string] $Endpoint)
    if ($Endpoint -notmatch '^(.+):(\d+)$') { return $false }
    $client = [System.Net.Sockets.TcpClient]::new()
    try {
        return ($client.ConnectAsync($Matches[1], [int]$Matches[2]).Wait(2000) -and $client.Connected)
    } catch {
        return $false
    } finally {
        $client.Dispose()
    }
}

function Test-HostReachable {
    param([AllowEmptyString()] [string] $Gateway)
    if ($Gateway -eq '') { return $false }
    try {
        return ([System.Net.NetworkInformation.Ping]::new().Send($Gateway, 1000).Status -eq 'Success')
    } catch {
        return $false
    }
}

function Invoke-Beacon {
    # Once per boot: this task starts at every boot, the FirstBoot task only until first boot is done.
    $identity = Update-NodeIdentity -StateDisk (Mount-StateDisk)
    Write-Log "beacon: state disk $($identity.StateDisk), node id '$($identity.NodeId)', boot $($identity.BootCount)"
    $image = Get-Content -LiteralPath (Get-AgentPath 'image.json') -Raw | ConvertFrom-Json
    $port = $null
    while ($true) {
        # One bad tick (a state file being replaced, a kubectl that hangs up) must not end the beacon.
        try {
            if (-not (Test-Path -LiteralPath (Get-AgentPath 'seed.json'))) {
                Start-Sleep -Seconds 5
                continue
            }
            $facts = Read-Facts
            $state = Read-State
            $kind = 'booting'
            $reason = ''
            if ($state.failed -ne '') {
                $kind = 'failed'
                $reason = $state.failed
            } elseif ((Test-Path -LiteralPath (Get-AgentPath 'joined')) -and (Test-NodeReady -Name $facts.hostname)) {
                $kind = 'ready'
            }
            $reach = if (Test-TcpReachable -Endpoint $facts.endpoint) { 'reachable' } else { 'unreachable' }
            $hostReach = if (Test-HostReachable -Gateway $facts.gateway) { 'reachable' } else { 'unreachable' }
            $uptime = [Math]::Round([System.Diagnostics.Stopwatch]::GetTimestamp() / [double][System.Diagnostics.Stopwatch]::Frequency, 2)
            $beacon = [ordered]@{
                event = $kind; image = $image.name; version = $image.version
                root_hash = ''; kubeadm_sha256 = $facts.kubeadm_sha256
                address = "$($facts.address)/$($facts.prefix)"; endpoint = $reach; host = $hostReach
                uptime = $uptime; node_id = $identity.NodeId; boot_count = $identity.BootCount
                state_disk = $identity.StateDisk
                reason = $reason
            }
            $line = $beacon | ConvertTo-Json -Compress
            try {
                if ($null -eq $port) {
                    $port = [System.IO.Ports.SerialPort]::new('COM1', 115200)
                    $port.WriteTimeout = 2000
                    $port.Open()
                }
                $port.WriteLine($line)
            } catch {
                if ($null -ne $port) { $port.Dispose() }
                $port = $null
            }
            try {
                if (-not (Test-Path -LiteralPath $Script:KvpKey)) { New-Item -Path $Script:KvpKey -Force | Out-Null }
                New-ItemProperty -Path $Script:KvpKey -Name 'SlipwayBeacon' -Value $line -PropertyType String -Force | Out-Null
            } catch {
                Write-Log "beacon: cannot write the KVP item: $($_.Exception.Message)"
            }
        } catch {
            Write-Log "beacon: this tick failed: $($_.Exception.Message)"
        }
        Start-Sleep -Seconds 5
    }
}

New-Item -ItemType Directory -Path $Root -Force | Out-Null
switch ($Mode) {
    'Install' { Invoke-Install }
    'Run' { Invoke-Run }
    'Beacon' { Invoke-Beacon }
}
