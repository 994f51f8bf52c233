#!/bin/sh
# Second stage of the test VM, PID 1 after switch_root. It runs with the host's
# own userland (seen read-only over 9p, writable through a tmpfs overlay), so
# the test binaries cargo built on the host run here unchanged.
#
# Kernel command line (written by `cargo xtask`):
#   apiproxy.results=DIR  host folder shared read-write as 9p tag "results";
#                         holds job.sh (what to run) and receives exit-code
#   apiproxy.modules=DIR  the unpacked Debian modules for this kernel
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /var/run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

results=
modules=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        apiproxy.results=*) results="${arg#apiproxy.results=}" ;;
        apiproxy.modules=*) modules="${arg#apiproxy.modules=}" ;;
    esac
done

# The exit code travels back over the results share; the live output goes to
# the virtio-serial port "out", which the host copies to its terminal.
out=/dev/console
for port in /sys/class/virtio-ports/*; do
    [ "$(cat "$port/name" 2>/dev/null)" = out ] && out="/dev/${port##*/}"
done
exec >"$out" 2>&1

halt() {
    sync
    umount "$results" 2>/dev/null
    echo o >/proc/sysrq-trigger
    sleep 10
}

mkdir -p "$results"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "$results"; then
    echo "vm-stage2: cannot mount the results share at $results"
    halt
fi

kver=$(uname -r)
# The host's modprobe looks in /usr/lib/modules/$(uname -r): point that at the
# unpacked Debian package so modprobe (and the kernel's own request_module)
# resolve dependencies such as libcrc32c -> crc32c_generic.
mkdir -p /usr/lib/modules
ln -sfn "$modules" "/usr/lib/modules/$kver"

for m in ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh dummy veth \
         nf_tables nft_compat nf_conntrack xt_ipvs xt_conntrack iptable_nat \
         iptable_filter ip6table_filter ip6table_nat inet_diag tcp_diag; do
    modprobe "$m" || echo "vm-stage2: modprobe $m failed"
done
ip link set lo up
hostname apiproxy-vm

export APISERVER_PROXY_IN_VM=1
cd "$results"
sh "$results/job.sh"
echo $? >"$results/exit-code"
halt
