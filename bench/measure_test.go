package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuSeconds is the process's user+system CPU time so far: every end of
// every path runs in this process, so it is the whole path's cost.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

type throughput struct {
	MBps      float64 // 10^6 bytes per second, aggregate
	CPUPerGiB float64 // process CPU seconds per GiB moved
}

// streamOnce moves n bytes over one stream of sp: op is opSink (client →
// upstream, "up") or opSource (upstream → client, "down").
func streamOnce(ctx context.Context, sp *streamPath, op byte, n int64) error {
	c, err := sp.open(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	return streamOp(c, op, n)
}

func streamOp(c net.Conn, op byte, n int64) error {
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	if op == opSink {
		for left := n; left > 0; {
			k, err := c.Write(buf[:min(left, chunk)])
			if err != nil {
				return err
			}
			left -= int64(k)
		}
		_, err := io.ReadFull(c, buf[:1])
		return err
	}
	_, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
	return err
}

// parallel runs f on streams goroutines, each moving total/streams bytes, and
// returns the aggregate rate and CPU cost.
func parallel(ctx context.Context, streams int, total int64, f func(ctx context.Context, n int64) error) (throughput, error) {
	per := total / int64(streams)
	var wg sync.WaitGroup
	errs := make([]error, streams)
	cpu0, t0 := cpuSeconds(), time.Now()
	for i := range streams {
		wg.Go(func() {
			errs[i] = f(ctx, per)
			// remotedialer's periodic connection sync can close a connection
			// the server opened a moment before the client registered it
			// ("sync from client"): that try is lost, not the figure.
			for try := 0; try < 3 && errs[i] != nil && strings.Contains(errs[i].Error(), "sync from client"); try++ {
				errs[i] = f(ctx, per)
			}
		})
	}
	wg.Wait()
	el, cpu := time.Since(t0).Seconds(), cpuSeconds()-cpu0
	if err := errors.Join(errs...); err != nil {
		return throughput{}, err
	}
	moved := float64(per * int64(streams))
	return throughput{MBps: moved / el / 1e6, CPUPerGiB: cpu / (moved / (1 << 30))}, nil
}

func streamThroughput(ctx context.Context, sp *streamPath, op byte, streams int, total int64) (throughput, error) {
	return parallel(ctx, streams, total, func(ctx context.Context, n int64) error { return streamOnce(ctx, sp, op, n) })
}

// httpOnce moves n bytes in one request: up is a POST to /sink, down a GET
// of /bytes.
func httpOnce(ctx context.Context, hp *httpPath, up bool, n int64) error {
	var req *http.Request
	var err error
	if up {
		req, err = http.NewRequestWithContext(ctx, "POST", hp.base+"/sink", io.LimitReader(zeroReader{}, n))
		if err == nil {
			req.ContentLength = n
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/bytes?n=%d", hp.base, n), nil)
	}
	if err != nil {
		return err
	}
	resp, err := hp.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, chunk))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if !up && got != n {
		return fmt.Errorf("got %d of %d bytes", got, n)
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func httpThroughput(ctx context.Context, hp *httpPath, up bool, streams int, total int64) (throughput, error) {
	return parallel(ctx, streams, total, func(ctx context.Context, n int64) error { return httpOnce(ctx, hp, up, n) })
}

type latency struct {
	P50us, P99us float64
}

func percentiles(d []time.Duration) latency {
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[min(len(d)-1, int(q*float64(len(d))))].Nanoseconds()) / 1e3 }
	return latency{P50us: at(0.50), P99us: at(0.99)}
}

// streamRTT is the round trip of one byte on an open stream to the echo.
func streamRTT(ctx context.Context, sp *streamPath, iters int) (latency, error) {
	c, err := sp.open(ctx)
	if err != nil {
		return latency{}, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{opEcho}); err != nil {
		return latency{}, err
	}
	b := []byte{0}
	d := make([]time.Duration, 0, iters)
	for i := range iters + iters/10 {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return latency{}, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return latency{}, err
		}
		if i >= iters/10 { // the first tenth warms up
			d = append(d, time.Since(t0))
		}
	}
	return percentiles(d), nil
}

// httpLatency is the time of a whole GET of path on a warm connection.
func httpLatency(ctx context.Context, hp *httpPath, path string, iters int) (latency, error) {
	d := make([]time.Duration, 0, iters)
	for i := range iters + iters/10 {
		t0 := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", hp.base+path, nil)
		resp, err := hp.client.Do(req)
		if err != nil {
			return latency{}, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return latency{}, err
		}
		if resp.StatusCode != 200 {
			return latency{}, fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
		}
		if i >= iters/10 {
			d = append(d, time.Since(t0))
		}
	}
	return percentiles(d), nil
}

// rate runs op on workers goroutines for dur and returns completions per
// second. An op that fails with remotedialer's "sync from client" is not
// counted; any other error ends the figure.
func rate(ctx context.Context, workers int, dur time.Duration, op func(ctx context.Context) error) (float64, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	t0 := time.Now()
	end := t0.Add(dur)
	for i := range workers {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := op(ctx); err != nil {
					if strings.Contains(err.Error(), "sync from client") {
						continue
					}
					errs[i] = err
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(t0).Seconds(), nil
}

// streamSetupRate: open a stream, echo one byte, close; per second.
func streamSetupRate(ctx context.Context, sp *streamPath, dur time.Duration) (float64, error) {
	return rate(ctx, 4, dur, func(ctx context.Context) error {
		c, err := sp.open(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		b := []byte{opEcho, 7}
		if _, err := c.Write(b); err != nil {
			return err
		}
		_, err = io.ReadFull(c, b[:1])
		return err
	})
}

// httpRequestRate: small GETs from 8 concurrent clients on warm connections.
func httpRequestRate(ctx context.Context, hp *httpPath, dur time.Duration) (float64, error) {
	return rate(ctx, 8, dur, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", hp.base+"/bytes?n=1", nil)
		resp, err := hp.client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
}

// holCost is the share of throughput that healthy streams lose while one
// stream's reader stalls on the same tunnel: 1 − with/without. The stalled
// stream asks for far more than any window and never reads.
func holCost(ctx context.Context, sp *streamPath, healthy int, total int64) (float64, error) {
	base, err := streamThroughput(ctx, sp, opSource, healthy, total)
	if err != nil {
		return 0, err
	}
	stalled, err := sp.open(ctx)
	if err != nil {
		return 0, err
	}
	defer stalled.Close()
	var hdr [9]byte
	hdr[0] = opSource
	binary.BigEndian.PutUint64(hdr[1:], 1<<40)
	if _, err := stalled.Write(hdr[:]); err != nil {
		return 0, err
	}
	time.Sleep(300 * time.Millisecond) // let it fill its window
	// A path whose stalled stream blocks the others would hang here: bound it.
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	with, err := streamThroughput(bctx, sp, opSource, healthy, total)
	if err != nil {
		if bctx.Err() != nil || isTimeout(err) {
			return 1, nil // the others stopped: a 100 % loss
		}
		return 0, err
	}
	return max(0, 1-with.MBps/base.MBps), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "deadline")
}
