package identity

import (
	"os"
	"path/filepath"
	"time"

	"github.com/rsttrace/rsttrace/events"
)

// noteNetnsLocked remembers the container or pod of a process seen acting
// in a network namespace. The host's own namespace is not a container's
// (a --net=host container would otherwise name it).
func (r *Resolver) noteNetnsLocked(netns uint32, id *ident) {
	if netns == 0 || netns == r.selfNetns || id == nil || id.ref == nil {
		return
	}
	ref := id.ref
	e, ok := r.netns.get(netns)
	switch {
	case !ok:
		r.netns.put(netns, &netnsEntry{ref: ref})
	case e.ref == ref:
	case ref.podUID != "" && e.ref.podUID == ref.podUID:
		// The containers of a pod share its namespace.
		e.shared = true
	default:
		// Another pod or container: the inode was reused once the
		// first namespace was gone. The newer one holds it.
		r.netns.put(netns, &netnsEntry{ref: ref})
	}
}

// Netns names a network namespace by its inode: its `ip netns` name and
// the container or pod whose processes were captured in it (the pod only,
// when several of its containers were). nil when it has no names.
func (r *Resolver) Netns(inode uint32) *events.NetnsNames {
	now := time.Now()
	r.nsMu.Lock()
	name, ok := r.nsNames[inode]
	age := now.Sub(r.nsRead)
	if !r.nsReadAny || !ok && age >= rereadEvery || age >= netnsNamesTTL {
		r.readNetnsNames(now)
		name = r.nsNames[inode]
	}
	r.nsMu.Unlock()

	var names events.NetnsNames
	names.Name = name
	r.mu.Lock()
	if e, ok := r.netns.get(inode); ok {
		names.Pod = e.ref.pod.Load()
		if !e.shared {
			names.Container = e.ref.ctr.Load()
		}
		r.lookupLocked(e.ref, now)
	}
	r.mu.Unlock()
	if names.Name == "" && names.Container == nil && names.Pod == nil {
		return nil
	}
	return &names
}

// readNetnsNames reads /run/netns: each file is a bind mount of a network
// namespace, whose inode (through stat, which follows the mount) is the
// namespace's.
func (r *Resolver) readNetnsNames(now time.Time) {
	r.nsRead, r.nsReadAny = now, true
	clear(r.nsNames)
	entries, err := os.ReadDir(r.o.NetnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if ino := nsInode(filepath.Join(r.o.NetnsDir, e.Name())); ino != 0 {
			r.nsNames[ino] = e.Name()
		}
	}
}
