package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimev1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/rsttrace/rsttrace/events"
)

// Labels the kubelet puts on every container and sandbox (CRI, and Docker
// through cri-dockerd).
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
)

// names is what a runtime said about a container.
type names struct {
	runtime, name                 string
	podNamespace, podName, podUID string
}

// lookupLocked queues a runtime lookup for ref unless it is named, queued,
// or failed less than negativeTTL ago. It never blocks: with the queue
// full the lookup is left for a later record.
func (r *Resolver) lookupLocked(ref *ctrRef, now time.Time) {
	if ref.id == "" || ref.named || ref.queued || now.Before(ref.retry) || !r.canLookup(ref.runtime) {
		return
	}
	select {
	case r.queue <- ref:
		ref.queued = true
	default:
	}
}

func (r *Resolver) canLookup(runtime string) bool {
	switch runtime {
	case "docker":
		return r.docker != nil
	case "podman":
		return r.podman != nil
	case "containerd", "cri-o":
		return len(r.cri) > 0
	}
	return r.docker != nil || len(r.cri) > 0
}

func (r *Resolver) lookupLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case ref := <-r.queue:
			ctx, cancel := context.WithTimeout(context.Background(), r.o.Timeout)
			n, found, err := r.lookup(ctx, ref)
			cancel()
			r.mu.Lock()
			ref.queued = false
			switch {
			case found:
				ref.named = true
				r.storeNames(ref, n)
			case err != nil:
				// A runtime that did not answer (busy, restarting)
				// is asked again soon, then less and less often.
				ref.failures++
				ref.retry = time.Now().Add(min(time.Second<<min(ref.failures-1, 5), negativeTTL))
			default:
				ref.retry = time.Now().Add(negativeTTL)
			}
			r.mu.Unlock()
		}
	}
}

// storeNames replaces ref's Container and Pod with named copies.
func (r *Resolver) storeNames(ref *ctrRef, n names) {
	c := *ref.ctr.Load()
	c.Name = n.name
	if c.Runtime == "" {
		c.Runtime = n.runtime
	}
	ref.ctr.Store(&c)
	if n.podName == "" && n.podUID == "" {
		return
	}
	pod := events.Pod{UID: ref.podUID, Namespace: n.podNamespace, Name: n.podName}
	if pod.UID == "" {
		pod.UID = n.podUID
	}
	ref.pod.Store(&pod)
}

// lookup asks the runtime the cgroup path named, or every configured one
// when the path did not say (kubelet's cgroupfs layout).
func (r *Resolver) lookup(ctx context.Context, ref *ctrRef) (names, bool, error) {
	var n names
	var err error
	found := false
	switch ref.runtime {
	case "docker":
		n, found, err = engineLookup(ctx, r.docker, ref.id)
	case "podman":
		n, found, err = engineLookup(ctx, r.podman, ref.id)
	case "containerd", "cri-o":
		n, found, err = r.criLookup(ctx, ref.id)
	default:
		n, found, err = r.criLookup(ctx, ref.id)
		if !found && r.docker != nil {
			var derr error
			n, found, derr = engineLookup(ctx, r.docker, ref.id)
			n.runtime = "docker"
			if found || derr != nil {
				err = derr
			}
		}
	}
	if err != nil {
		slog.Debug("naming container", "id", ref.id, "runtime", ref.runtime, "error", err)
	}
	return n, found, err
}

// unixHTTPClient talks HTTP over a unix socket (the Docker Engine API).
func unixHTTPClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns: 1,
	}}
}

// engineLookup asks the Docker Engine API (or podman's compatible one)
// for a container: GET /containers/<id>/json, .Name is "/name". API 1.41
// is Docker 20.10's, and answered by every later engine.
func engineLookup(ctx context.Context, c *http.Client, id string) (names, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://engine/v1.41/containers/"+url.PathEscape(id)+"/json", nil)
	if err != nil {
		return names{}, false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return names{}, false, fmt.Errorf("asking the engine api: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return names{}, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return names{}, false, fmt.Errorf("asking the engine api: status %s", resp.Status)
	}
	var body struct {
		Name   string
		Config struct{ Labels map[string]string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return names{}, false, fmt.Errorf("decoding the engine's container: %w", err)
	}
	l := body.Config.Labels
	return names{
		name:         strings.TrimPrefix(body.Name, "/"),
		podNamespace: l[labelPodNamespace], podName: l[labelPodName], podUID: l[labelPodUID],
	}, true, nil
}

// criClient is a lazily dialed CRI runtime service.
type criClient struct {
	path string
	mu   sync.Mutex
	conn *grpc.ClientConn
	rs   runtimev1.RuntimeServiceClient
	name string // the runtime's name, from Version
}

func (c *criClient) client() (runtimev1.RuntimeServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rs != nil {
		return c.rs, nil
	}
	conn, err := grpc.NewClient("unix://"+c.path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dialing cri socket %s: %w", c.path, err)
	}
	c.conn, c.rs = conn, runtimev1.NewRuntimeServiceClient(conn)
	return c.rs, nil
}

// runtimeName is the runtime's own name for itself ("containerd",
// "cri-o"), asked once; the socket's name when it does not say.
func (c *criClient) runtimeName(ctx context.Context, rs runtimev1.RuntimeServiceClient) string {
	c.mu.Lock()
	name := c.name
	c.mu.Unlock()
	if name != "" {
		return name
	}
	if v, err := rs.Version(ctx, &runtimev1.VersionRequest{}); err == nil && v.RuntimeName != "" {
		name = v.RuntimeName
	} else if strings.Contains(c.path, "crio") {
		name = "cri-o"
	} else if strings.Contains(c.path, "containerd") {
		name = "containerd"
	}
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
	return name
}

func (c *criClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
}

// criLookup asks each CRI socket that exists for the container (its name,
// and its pod from the kubelet's labels), then for a sandbox with that id
// (the pod's pause container).
func (r *Resolver) criLookup(ctx context.Context, id string) (names, bool, error) {
	var errs []error
	for _, c := range r.cri {
		if _, err := os.Stat(c.path); err != nil {
			continue
		}
		rs, err := c.client()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cs, err := rs.ContainerStatus(ctx, &runtimev1.ContainerStatusRequest{ContainerId: id})
		if err == nil && cs.GetStatus() != nil {
			st := cs.GetStatus()
			l := st.GetLabels()
			return names{
				runtime: c.runtimeName(ctx, rs), name: st.GetMetadata().GetName(),
				podNamespace: l[labelPodNamespace], podName: l[labelPodName], podUID: l[labelPodUID],
			}, true, nil
		}
		if err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("asking %s for container status: %w", c.path, err))
			continue
		}
		ps, err := rs.PodSandboxStatus(ctx, &runtimev1.PodSandboxStatusRequest{PodSandboxId: id})
		if err == nil && ps.GetStatus() != nil {
			m := ps.GetStatus().GetMetadata()
			return names{
				runtime:      c.runtimeName(ctx, rs),
				podNamespace: m.GetNamespace(), podName: m.GetName(), podUID: m.GetUid(),
			}, true, nil
		}
		if err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("asking %s for sandbox status: %w", c.path, err))
		}
	}
	if len(errs) > 0 {
		return names{}, false, errs[0]
	}
	return names{}, false, nil
}
