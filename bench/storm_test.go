package bench

import (
	"fmt"
	"net"
	"time"
)

// StormResult is a reconnect storm: n agents connected, the relay process
// killed and a new one started on the same address at once, the agents
// reconnecting with their own backoff.
type StormResult struct {
	Contender string
	N         int
	Reached   int     // agents back when the wait ended
	BackSec   float64 // from the new relay's start until the last was back
	HalfSec   float64 // until half were back
	PeakPerS  int     // most reconnects in one second
	Note      string  `json:",omitempty"`
}

func reconnectStorm(p *pki, kind string, n, index int) (StormResult, error) {
	r := StormResult{N: n}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	addr := ln.Addr().String()
	ln.Close()
	e := hostEnv{kind: kind, mode: "tunnels", n: n, index: index, p: p, listen: addr}
	first, err := startHost("relay", e)
	if err != nil {
		return r, err
	}
	e.url = first.vals["url"]
	agents, err := startHost("agents", e)
	if err != nil {
		first.close()
		return r, err
	}
	defer agents.close()
	if c, err := waitCount(first, n); err != nil || c < n {
		first.close()
		return r, fmt.Errorf("only %d of %d agents connected before the restart (%v)", c, n, err)
	}
	first.cmd.Process.Kill()
	first.close()
	second, err := startHost("relay", e)
	if err != nil {
		return r, fmt.Errorf("restart: %w", err)
	}
	defer second.close()
	t0 := time.Now()
	type point struct {
		at time.Duration
		n  int
	}
	var points []point
	best, since := -1, time.Now()
	for {
		c, err := second.count()
		if err != nil {
			return r, err
		}
		at := time.Since(t0)
		points = append(points, point{at, c})
		if r.HalfSec == 0 && c >= n/2 {
			r.HalfSec = at.Seconds()
		}
		if c >= n {
			break
		}
		if c > best {
			best, since = c, time.Now()
		} else if time.Since(since) > stallAfter {
			r.Note = fmt.Sprintf("%d of %d back; no progress for %s", c, n, stallAfter)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	last := points[len(points)-1]
	r.Reached, r.BackSec = last.n, last.at.Seconds()
	// The peak: the most that came back within any one second.
	for i, a := range points {
		for j := i + 1; j < len(points) && points[j].at-a.at <= time.Second; j++ {
			r.PeakPerS = max(r.PeakPerS, points[j].n-a.n)
		}
	}
	return r, nil
}
