#!/bin/bash
# run.sh SCRIPT: run SCRIPT (bash, under $LGVM_WORK) as root inside a QEMU VM that boots Debian's
# linux-image-$LGVM_KERNEL with this machine's root file system read-only under a tmpfs overlay. For what
# the machine's own kernel cannot do: it refuses BPF trampoline programs (fentry/fmod_ret), which
# mptcp-transparent needs. Prints the VM's console; exits with the script's status.
# The kernel package is fetched once with apt-get download into $LGVM_WORK (no root file system is built:
# the VM sees the tools installed here). Needs qemu-system-x86 and cpio (make deps).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
script=$(realpath "$1")
WORK=${LGVM_WORK:-/var/tmp/linkagg-vm}
KVER=${LGVM_KERNEL:-6.12.107+deb12-amd64}
MEM=${LGVM_MEM:-3072}
SMP=${LGVM_SMP:-2}
case "$script" in "$WORK"/*) ;; *) echo "run.sh: $script is not under $WORK" >&2; exit 2 ;; esac
mkdir -p "$WORK"
if [ ! -f "$WORK/vmlinuz-$KVER" ]; then
  ( cd "$WORK" && mkdir -p deb && cd deb && ls linux-image-*.deb >/dev/null 2>&1 || apt-get download "linux-image-$KVER-unsigned" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get download "linux-image-$KVER-unsigned"; } )
  rm -rf "$WORK/x" && dpkg-deb -x "$WORK"/deb/linux-image-*.deb "$WORK/x"
  depmod -b "$WORK/x" "$KVER"   # the package's postinst would; modprobe in the VM needs modules.dep
  rm -rf "$WORK/modules" && mkdir -p "$WORK/modules" && mv "$WORK/x/lib/modules/$KVER" "$WORK/modules/"
  mv "$WORK/x/boot/vmlinuz-$KVER" "$WORK/vmlinuz-$KVER"
  rm -rf "$WORK/x" "$WORK/deb"
fi
# per run: VMs of concurrent test runs share $WORK (the kernel) but not their initramfs or console log
ird=$(mktemp -d)
vmrun=$(mktemp -d "$WORK/vm-XXXXXX")
trap 'rm -rf "$ird" "$vmrun"' EXIT
mkdir -p "$ird/modules"
(cd "$top" && CGO_ENABLED=0 go build -trimpath -o "$ird/init" ./tests/vm/init)
for m in fs/netfs/netfs net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p fs/overlayfs/overlay; do
  cp "$WORK/modules/$KVER/kernel/$m.ko.xz" "$ird/modules/"
done
(cd "$ird" && find . | cpio -o -H newc --quiet) > "$vmrun/initramfs.cpio"
accel=tcg
[ -n "${LGVM_KVM:-}" ] && accel=kvm
out="$vmrun/console.log"
# -no-reboot + panic=-1: a kernel panic ends qemu instead of looping
timeout "${LGVM_TIMEOUT:-3000}" qemu-system-x86_64 -machine q35 -accel $accel -cpu max -m "$MEM" -smp "$SMP" \
  -kernel "$WORK/vmlinuz-$KVER" -initrd "$vmrun/initramfs.cpio" -nographic -no-reboot -nic none \
  -append "console=ttyS0 quiet panic=-1 lgvm.work=$WORK lgvm.script=$script" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$WORK",mount_tag=work,security_model=none,multidevs=remap </dev/null | tee "$out"
code=$(sed -n 's/^LGVM-EXIT \([0-9]*\).*/\1/p' "$out" | tail -1)
[ -n "$code" ] || { echo "run.sh: the VM ended without an exit status" >&2; exit 125; }
exit "$code"
