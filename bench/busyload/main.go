// Command busyload makes the background traffic of the busy-host benchmark
// (bench/busy.sh), run inside the client namespace, and counts exactly what
// it did, so the tracer's output can be checked against it:
//
//	busyload -scan 10.203.0.1 -rate 50 -duration 10s
//	    connect() once a tick to the next port of -ports (closed ones):
//	    a slow port scan; counts refused, connected and other outcomes
//	busyload -udp 10.203.0.1:9999 -rate 1000 -duration 10s
//	    UDP datagrams to a port a firewall rule drops; counts those sent
//	busyload -check http://10.203.0.1/
//	    one GET of the page (200 expected) and one of /reset, which must
//	    end in a connection reset: the benchmark's resets are real RSTs
//
// Every loop is bounded by -rate × -duration iterations and by -duration
// plus a grace period; the result is one JSON object on stdout.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type result struct {
	Mode      string         `json:"mode"`
	Attempts  uint64         `json:"attempts"`
	Refused   uint64         `json:"refused"`
	Connected uint64         `json:"connected"`
	Sent      uint64         `json:"sent"`
	Errors    uint64         `json:"errors"`
	ErrorKind map[string]int `json:"error_kinds,omitempty"`
	DurationS float64        `json:"duration_s"`
}

func main() {
	scan := flag.String("scan", "", "address to scan (closed ports of -ports)")
	ports := flag.String("ports", "20000-29999", "port range the scan walks, first-last (nothing may listen there)")
	udp := flag.String("udp", "", "addr:port to send UDP datagrams to")
	size := flag.Int("size", 64, "UDP payload bytes")
	check := flag.String("check", "", "base URL of the server to check")
	rate := flag.Int("rate", 50, "connects or datagrams per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	flag.Parse()

	var res result
	var err error
	switch {
	case *check != "":
		err = checkServer(*check)
		if err == nil {
			fmt.Println("server ok: / answers 200, /reset is reset")
		}
		exit(err)
		return
	case *scan != "":
		res, err = runScan(*scan, *ports, *rate, *duration)
	case *udp != "":
		res, err = runUDP(*udp, *size, *rate, *duration)
	default:
		err = errors.New("one of -scan, -udp, -check is needed")
	}
	if err != nil {
		exit(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "busyload:", err)
		os.Exit(1)
	}
}

// pace calls step up to rate×d times, one call per 1/rate seconds, and stops
// at d plus a second whatever step costs.
func pace(rate int, d time.Duration, step func()) time.Duration {
	if rate < 1 {
		rate = 1
	}
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	deadline := start.Add(d + time.Second)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		step()
	}
	return time.Since(start)
}

func runScan(addr, ports string, rate int, d time.Duration) (result, error) {
	res := result{Mode: "scan", ErrorKind: map[string]int{}}
	first, last, err := portRange(ports)
	if err != nil {
		return res, err
	}
	ip := net.ParseIP(addr)
	if ip == nil {
		return res, fmt.Errorf("scan target %q is not an IP address", addr)
	}
	port := first
	dialer := net.Dialer{Timeout: time.Second}
	res.DurationS = pace(rate, d, func() {
		res.Attempts++
		c, err := dialer.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		switch {
		case err == nil:
			res.Connected++
			c.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			res.Refused++
		default:
			res.Errors++
			res.ErrorKind[errKind(err)]++
		}
		if port++; port > last {
			port = first
		}
	}).Seconds()
	return res, nil
}

func runUDP(addr string, size, rate int, d time.Duration) (result, error) {
	res := result{Mode: "udp", ErrorKind: map[string]int{}}
	c, err := net.Dial("udp", addr)
	if err != nil {
		return res, fmt.Errorf("opening udp socket to %s: %w", addr, err)
	}
	defer c.Close()
	payload := make([]byte, size)
	res.DurationS = pace(rate, d, func() {
		res.Attempts++
		if _, err := c.Write(payload); err != nil {
			res.Errors++
			res.ErrorKind[errKind(err)]++
			return
		}
		res.Sent++
	}).Seconds()
	return res, nil
}

func checkServer(base string) error {
	base = strings.TrimSuffix(base, "/")
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(base + "/")
	if err != nil {
		return fmt.Errorf("getting %s/: %w", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("getting %s/: status %d", base, resp.StatusCode)
	}
	// A raw request, so that no client library retries the reset one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", base, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /reset HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return fmt.Errorf("sending GET /reset: %w", err)
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	if !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("GET /reset: want a connection reset, got %v", err)
	}
	return nil
}

func portRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return 0, 0, fmt.Errorf("port range %q: want first-last within 1-65535", s)
	}
	return first, last, nil
}

func errKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}
