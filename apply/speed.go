package apply

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolCmd is struct ethtool_cmd of linux/ethtool.h, for ETHTOOL_GSET: the one query of a link's speed
// that every kernel since 2.6 answers, without privileges (the newer ETHTOOL_GLINKSETTINGS gives the
// same speed in two round trips).
type ethtoolCmd struct {
	Cmd           uint32
	Supported     uint32
	Advertising   uint32
	Speed         uint16
	Duplex        uint8
	Port          uint8
	PhyAddress    uint8
	Transceiver   uint8
	Autoneg       uint8
	MdioSupport   uint8
	Maxtxpkt      uint32
	Maxrxpkt      uint32
	SpeedHi       uint16
	EthTpMdix     uint8
	EthTpMdixCtrl uint8
	LpAdvertising uint32
	Reserved      [2]uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // the rest of struct ifreq's union: 40 bytes in all on 64-bit
}

// linkSpeed is what the driver of link name reports as its speed, in Mbit/s, asked on a socket of the
// calling thread's network namespace (the session's); 0 when it reports none (no carrier, no ethtool
// support: a TUN, a tunnel, wireguard) or the question fails.
func linkSpeed(name string) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var req ifreqData
	if len(name) >= len(req.name) {
		return 0
	}
	copy(req.name[:], name)
	cmd := ethtoolCmd{Cmd: unix.ETHTOOL_GSET}
	req.data = unsafe.Pointer(&cmd)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); e != 0 {
		return 0
	}
	s := uint32(cmd.SpeedHi)<<16 | uint32(cmd.Speed)
	if s == 0 || s == 0xffffffff || s == 0xffff { // SPEED_UNKNOWN (and its 16-bit form from old drivers)
		return 0
	}
	return int(s)
}
