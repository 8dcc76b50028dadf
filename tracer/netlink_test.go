package tracer

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// A few rtnetlink requests for the privileged tests' two-host rig: a veth
// pair across namespaces, addresses and static neighbours. Done from Go
// (golang.org/x/sys/unix) rather than with `ip`, so the tests need no
// iproute2: the VM tests run in a busybox initramfs.

// vethInfoPeer is VETH_INFO_PEER (include/uapi/linux/veth.h).
const vethInfoPeer = 1

var ne = binary.NativeEndian

// nlAttr is one netlink attribute, padded to 4 bytes.
func nlAttr(typ uint16, data []byte) []byte {
	b := make([]byte, unix.SizeofRtAttr, unix.SizeofRtAttr+len(data)+3)
	ne.PutUint16(b[0:], uint16(unix.SizeofRtAttr+len(data)))
	ne.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlString(typ uint16, s string) []byte { return nlAttr(typ, append([]byte(s), 0)) }

func nlU32(typ uint16, v uint32) []byte {
	b := make([]byte, 4)
	ne.PutUint32(b, v)
	return nlAttr(typ, b)
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// ifinfomsg is struct ifinfomsg with family AF_UNSPEC.
func ifinfomsg(index int32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	ne.PutUint32(b[4:], uint32(index))
	return b
}

// rtnlDo sends one request on a NETLINK_ROUTE socket made in the calling
// thread's network namespace and waits for its acknowledgement.
func rtnlDo(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1) // seq
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink error message")
			}
			if errno := int32(ne.Uint32(m.Data)); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
	}
}

// createVeth makes a veth pair in the calling thread's namespace: name
// here with MAC mac, its peer peerName (MAC peerMAC) moved at once into
// the namespace open as peerNetns.
func createVeth(name string, mac net.HardwareAddr, peerName string, peerMAC net.HardwareAddr, peerNetns int) error {
	peer := concat(ifinfomsg(0), nlString(unix.IFLA_IFNAME, peerName), nlAttr(unix.IFLA_ADDRESS, peerMAC),
		nlU32(unix.IFLA_NET_NS_FD, uint32(peerNetns)))
	info := concat(nlString(unix.IFLA_INFO_KIND, "veth"), nlAttr(unix.IFLA_INFO_DATA, nlAttr(vethInfoPeer, peer)))
	body := concat(ifinfomsg(0), nlString(unix.IFLA_IFNAME, name), nlAttr(unix.IFLA_ADDRESS, mac),
		nlAttr(unix.IFLA_LINKINFO, info))
	if err := rtnlDo(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body); err != nil {
		return fmt.Errorf("creating veth %s/%s: %w", name, peerName, err)
	}
	return nil
}

// addAddr adds prefix to interface index (no duplicate address detection:
// a tentative IPv6 address cannot be bound).
func addAddr(index int, prefix netip.Prefix) error {
	a := prefix.Addr()
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	if a.Is6() {
		b[0] = unix.AF_INET6
		b[2] = unix.IFA_F_NODAD
	}
	b[1] = byte(prefix.Bits())
	ne.PutUint32(b[4:], uint32(index))
	body := concat(b, nlAttr(unix.IFA_LOCAL, a.AsSlice()), nlAttr(unix.IFA_ADDRESS, a.AsSlice()))
	if err := rtnlDo(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body); err != nil {
		return fmt.Errorf("adding address %v: %w", prefix, err)
	}
	return nil
}

// addNeigh adds a permanent neighbour entry: ip is at mac on index.
func addNeigh(index int, ip netip.Addr, mac net.HardwareAddr) error {
	b := make([]byte, unix.SizeofNdMsg)
	b[0] = unix.AF_INET
	if ip.Is6() {
		b[0] = unix.AF_INET6
	}
	ne.PutUint32(b[4:], uint32(index))
	ne.PutUint16(b[8:], unix.NUD_PERMANENT)
	body := concat(b, nlAttr(unix.NDA_DST, ip.AsSlice()), nlAttr(unix.NDA_LLADDR, mac))
	if err := rtnlDo(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body); err != nil {
		return fmt.Errorf("adding neighbour %v at %v: %w", ip, mac, err)
	}
	return nil
}

// ifIndex is the index of interface name in the calling thread's netns.
func ifIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFINDEX %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}
