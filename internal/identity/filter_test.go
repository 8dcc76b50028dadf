package identity

import (
	"testing"

	"github.com/rsttrace/rsttrace/events"
)

func TestFilter(t *testing.T) {
	web := &events.Process{Pid: 1, Comm: "nginx", Unit: "nginx.service"}
	ctr := &events.Process{Pid: 2, Comm: "app",
		Container: &events.Container{ID: hexA, Runtime: "containerd", Name: "app"},
		Pod:       &events.Pod{UID: uid, Namespace: "shop", Name: "cart-7d9f"}}
	bare := &events.Process{Pid: 3, Comm: "sh"}
	tests := []struct {
		name string
		f    Filter
		p    *events.Process
		want bool
	}{
		{"empty matches all", Filter{}, bare, true},
		{"empty matches nil", Filter{}, nil, true},
		{"nil never matches a filter", Filter{Units: []string{"*"}}, nil, false},
		{"unit exact", Filter{Units: []string{"nginx.service"}}, web, true},
		{"unit glob", Filter{Units: []string{"ngin*"}}, web, true},
		{"unit other", Filter{Units: []string{"sshd.service"}}, web, false},
		{"unit glob needs a unit", Filter{Units: []string{"*"}}, bare, false},
		{"unit one of", Filter{Units: []string{"sshd.service", "nginx.service"}}, web, true},
		{"container id prefix", Filter{Containers: []string{hexA[:4]}}, ctr, true},
		{"container full id", Filter{Containers: []string{hexA}}, ctr, true},
		{"container prefix too short", Filter{Containers: []string{hexA[:3]}}, ctr, false},
		{"container name", Filter{Containers: []string{"app"}}, ctr, true},
		{"container docker-style name", Filter{Containers: []string{"/app"}}, ctr, true},
		{"container other", Filter{Containers: []string{"db"}}, ctr, false},
		{"container not in one", Filter{Containers: []string{"app"}}, web, false},
		{"pod ns/name", Filter{Pods: []string{"shop/cart-7d9f"}}, ctr, true},
		{"pod other ns", Filter{Pods: []string{"default/cart-7d9f"}}, ctr, false},
		{"pod name", Filter{Pods: []string{"cart-7d9f"}}, ctr, true},
		{"pod uid", Filter{Pods: []string{uid}}, ctr, true},
		{"pod unnamed, by uid", Filter{Pods: []string{uid}}, &events.Process{Pod: &events.Pod{UID: uid}}, true},
		{"pod unnamed, by name", Filter{Pods: []string{"shop/"}}, &events.Process{Pod: &events.Pod{UID: uid, Namespace: "shop"}}, false},
		{"every kind must match", Filter{Containers: []string{"app"}, Pods: []string{"other"}}, ctr, false},
		{"every kind matches", Filter{Containers: []string{"app"}, Pods: []string{"shop/cart-7d9f"}}, ctr, true},
	}
	for _, tt := range tests {
		if got := tt.f.Match(tt.p); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !(Filter{}).Empty() || (Filter{Pods: []string{"x"}}).Empty() {
		t.Error("Empty is wrong")
	}
}
