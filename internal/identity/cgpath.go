package identity

import "strings"

// pathInfo is what a cgroup path says about the processes in it.
type pathInfo struct {
	// Unit is the innermost systemd service or scope that is not a
	// container's own scope, below the container when there is one.
	Unit string
	// ContainerID is the runtime's full id; Runtime is docker,
	// containerd, cri-o or podman, empty when the layout does not say
	// (kubelet's cgroupfs layout names only the id).
	ContainerID string
	Runtime     string
	// PodUID is the Kubernetes pod uid, with dashes.
	PodUID string
}

// containerScopes are the prefixes runtimes give a container's cgroup:
// "<prefix><64 hex>.scope" with the systemd cgroup driver, the same
// without ".scope" with cgroupfs (cri-o, podman).
var containerScopes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"nerdctl-", "containerd"},
	{"crio-", "cri-o"},
	{"libpod-", "podman"},
}

// parsePath reads the unit, container and pod out of a cgroup path (v2,
// or the path of a v1 line). The shapes are found anywhere in the path, so
// nested hierarchies (a kind node's containers under its own container,
// a delegated subtree) parse the same; the innermost container wins.
func parsePath(p string) pathInfo {
	var info pathInfo
	comps := strings.Split(strings.Trim(p, "/"), "/")
	ci := -1
	for i := len(comps) - 1; i >= 0; i-- {
		parent := ""
		if i > 0 {
			parent = comps[i-1]
		}
		if id, rt, ok := containerComponent(comps[i], parent); ok {
			info.ContainerID, info.Runtime, ci = id, rt, i
			break
		}
	}
	from := len(comps) - 1
	if ci >= 0 {
		from = ci - 1
	}
	for i := from; i >= 0; i-- {
		if uid, ok := podComponent(comps[i]); ok {
			info.PodUID = uid
			break
		}
	}
	// A container scope (docker-<id>.scope) is a unit to systemd, but
	// the container already names it; a unit is reported for a container
	// process only when it is one of the container's own (systemd
	// running inside it).
	for i := len(comps) - 1; i > ci; i-- {
		if c := comps[i]; strings.HasSuffix(c, ".service") || strings.HasSuffix(c, ".scope") {
			info.Unit = c
			break
		}
	}
	return info
}

// containerComponent recognizes one path component as a container.
func containerComponent(c, parent string) (id, runtime string, ok bool) {
	if isContainerID(c) {
		// cgroupfs layouts: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>;
		// kubelet's layout does not say which runtime.
		if parent == "docker" {
			return c, "docker", true
		}
		return c, "", true
	}
	name := strings.TrimSuffix(c, ".scope")
	for _, s := range containerScopes {
		if rest, found := strings.CutPrefix(name, s.prefix); found && isContainerID(rest) {
			return rest, s.runtime, true
		}
	}
	return "", "", false
}

// isContainerID: every runtime here names containers by 64 hex digits.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(b byte) bool { return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' }

// podComponent recognizes kubelet's pod cgroup: "pod<uid>" with the
// cgroupfs driver, "kubepods[-<qos>]-pod<uid with _ for ->.slice" with
// systemd's (which reserves "-" for the slice hierarchy); with a prefix
// when a kubelet runs nested (kind: "kubelet-kubepods-...").
func podComponent(c string) (string, bool) {
	var uid string
	if name, ok := strings.CutSuffix(c, ".slice"); ok {
		i := strings.LastIndex(name, "-pod")
		if i < 0 || !strings.Contains(name, "kubepods") {
			return "", false
		}
		uid = strings.ReplaceAll(name[i+len("-pod"):], "_", "-")
	} else if rest, ok := strings.CutPrefix(c, "pod"); ok {
		uid = rest
	} else {
		return "", false
	}
	// UIDs are UUIDs; static pods' are 32 hex digits (a hash).
	if len(uid) != 36 && len(uid) != 32 {
		return "", false
	}
	for i := 0; i < len(uid); i++ {
		if !isHex(uid[i]) && uid[i] != '-' {
			return "", false
		}
	}
	return uid, true
}

// procCgroup is /proc/PID/cgroup split into the v2 path and the v1 paths.
type procCgroup struct {
	v2      string
	hasV2   bool
	v1      []string
	systemd string // the name=systemd v1 hierarchy, on hybrid hosts
}

// parseProcCgroup reads /proc/PID/cgroup: "hierarchy-ID:controllers:path"
// lines; the v2 line is "0::path".
func parseProcCgroup(data string) procCgroup {
	var pc procCgroup
	for line := range strings.Lines(data) {
		line = strings.TrimSuffix(line, "\n")
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && ctrls == "":
			pc.v2, pc.hasV2 = path, true
		case ctrls == "name=systemd":
			pc.systemd = path
			pc.v1 = append(pc.v1, path)
		default:
			pc.v1 = append(pc.v1, path)
		}
	}
	return pc
}

// identify combines the lines of /proc/PID/cgroup: the v2 path where it
// names something, else the v1 paths (hybrid hosts where a runtime with
// the cgroupfs driver uses only the v1 hierarchies), else the v1
// name=systemd hierarchy for the unit.
func (pc procCgroup) identify() pathInfo {
	info := parsePath(pc.v2)
	if info.ContainerID == "" {
		for _, p := range pc.v1 {
			if v1 := parsePath(p); v1.ContainerID != "" {
				// The v2 path of such a process is the one the
				// runtime's daemon ran in (docker.service), not its own.
				info = v1
				break
			}
		}
	}
	if info.ContainerID == "" && info.PodUID == "" && info.Unit == "" && pc.systemd != "" {
		info = parsePath(pc.systemd)
	}
	return info
}
