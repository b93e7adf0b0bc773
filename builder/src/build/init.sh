#!/bin/busybox sh
# Slipway's initrd init: load the modules the recipe named, open the dm-verity root that the
# kernel command line describes, and hand over to the root's /sbin/init. Any failure is said on
# the console and powers the machine off: a node never boots a root that fails verification.
B=/bin/busybox
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

fail() {
	echo "slipway-initrd: $*"
	echo "slipway-initrd: powering off"
	$B sleep 1
	$B poweroff -f
}

for module in $($B cat /etc/slipway/modules); do
	$B insmod "/$module" || fail "cannot load $module"
done

roothash=
verity=
fstype=erofs
for arg in $($B cat /proc/cmdline); do
	case "$arg" in
	slipway.roothash=*) roothash=${arg#slipway.roothash=} ;;
	slipway.verity=*) verity=${arg#slipway.verity=} ;;
	slipway.rootfs=*) fstype=${arg#slipway.rootfs=} ;;
	esac
done
[ -n "$roothash" ] && [ -n "$verity" ] || fail "the kernel command line has no slipway.roothash= or slipway.verity="
blocks=${verity%%:*}
salt=${verity#*:}

# Partitions are found by their GPT names, whichever disk and bus they are on.
find_partition() {
	for uevent in /sys/class/block/*/uevent; do
		if $B grep -qx "PARTNAME=$1" "$uevent"; then
			dir=${uevent%/uevent}
			echo "/dev/${dir##*/}"
			return 0
		fi
	done
	return 1
}
tries=0
until data=$(find_partition slipway-root) && hash=$(find_partition slipway-root-verity); do
	tries=$((tries + 1))
	[ "$tries" -le 300 ] || fail "no partitions named slipway-root and slipway-root-verity appeared"
	$B sleep 0.1
done

LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu \
	dmsetup create slipway-root --readonly --noudevsync \
	--table "0 $((blocks * 8)) verity 1 $data $hash 4096 4096 $blocks 1 sha256 $roothash $salt" ||
	fail "cannot open the verity root on $data"
device=/dev/mapper/slipway-root
[ -b "$device" ] || device=/dev/dm-0
$B mount -t "$fstype" -o ro "$device" /newroot ||
	fail "cannot mount the verity root: its content does not match the root hash (tampered or corrupt image)"
# /sbin/init may be an absolute link, which only resolves once the root is /: links are
# followed by hand, inside /newroot.
init=/newroot/sbin/init
[ -e "$init" ] || [ -L "$init" ] || fail "the root has no /sbin/init"
hops=0
while [ -L "$init" ] && [ "$hops" -lt 16 ]; do
	target=$($B readlink "$init")
	case "$target" in
	/*) init=/newroot$target ;;
	*) init=$($B dirname "$init")/$target ;;
	esac
	hops=$((hops + 1))
done
# dm-verity checks each block as it is read: /sbin/init is read whole here, so a tampered
# init is refused with a message and a power-off, not a kernel panic after switch_root.
$B cat "$init" >/dev/null 2>&1 ||
	fail "cannot read /sbin/init from the verity root: its content does not match the root hash (tampered or corrupt image)"
echo "slipway-initrd: root verified against $roothash"
$B umount /sys /proc
$B umount -l /dev
exec $B switch_root /newroot /sbin/init
