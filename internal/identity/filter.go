package identity

import (
	"path"
	"strings"

	"github.com/rsttrace/rsttrace/events"
)

// Filter selects processes by the names Fill gave them. A process matches
// when, for every list that is not empty, it matches one of its entries.
type Filter struct {
	// Units: a systemd unit name ("nginx.service") or glob ("nginx*").
	Units []string
	// Containers: an id prefix of at least 4 characters, or a name.
	Containers []string
	// Pods: "namespace/name", a name, or a uid.
	Pods []string
}

// Empty reports whether the filter selects every process.
func (f Filter) Empty() bool {
	return len(f.Units) == 0 && len(f.Containers) == 0 && len(f.Pods) == 0
}

// Match reports whether p is selected; a nil p only by an empty filter.
func (f Filter) Match(p *events.Process) bool {
	if f.Empty() {
		return true
	}
	if p == nil {
		return false
	}
	if len(f.Units) > 0 && !matchUnit(f.Units, p.Unit) {
		return false
	}
	if len(f.Containers) > 0 && !matchContainer(f.Containers, p.Container) {
		return false
	}
	if len(f.Pods) > 0 && !matchPod(f.Pods, p.Pod) {
		return false
	}
	return true
}

func matchUnit(pats []string, unit string) bool {
	if unit == "" {
		return false
	}
	for _, pat := range pats {
		if pat == unit {
			return true
		}
		if ok, err := path.Match(pat, unit); err == nil && ok {
			return true
		}
	}
	return false
}

func matchContainer(pats []string, c *events.Container) bool {
	if c == nil {
		return false
	}
	for _, pat := range pats {
		if len(pat) >= 4 && strings.HasPrefix(c.ID, pat) {
			return true
		}
		if c.Name != "" && strings.TrimPrefix(pat, "/") == c.Name {
			return true
		}
	}
	return false
}

func matchPod(pats []string, p *events.Pod) bool {
	if p == nil {
		return false
	}
	for _, pat := range pats {
		if ns, name, ok := strings.Cut(pat, "/"); ok {
			if ns == p.Namespace && name == p.Name && name != "" {
				return true
			}
			continue
		}
		if pat == p.Name && pat != "" || pat == p.UID && pat != "" {
			return true
		}
	}
	return false
}
