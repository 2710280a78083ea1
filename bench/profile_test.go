package bench

import (
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
)

// profiler writes a CPU profile and allocation profiles around one measure
// of one contender (make bench PROFILE=1; the first run only) into dir, as
// <contender>-<measure>.cpu.pprof, and .allocs-base.pprof / .allocs.pprof
// taken just before and after: the allocations of the measure are
//
//	go tool pprof -sample_index=alloc_space -base X.allocs-base.pprof X.allocs.pprof
//
// An empty dir profiles nothing.
type profiler struct{ dir, name string }

func (o opts) profiler(name string) profiler { return profiler{dir: o.profileDir, name: name} }

// profiled runs f under p for the measure named what.
func profiled[T any](p profiler, what string, f func() (T, error)) (T, error) {
	if p.dir == "" {
		return f()
	}
	base := filepath.Join(p.dir, slug(p.name)+"-"+what)
	writeProfile("allocs", base+".allocs-base.pprof")
	if cpu, err := os.Create(base + ".cpu.pprof"); err == nil {
		if pprof.StartCPUProfile(cpu) == nil {
			defer func() { pprof.StopCPUProfile(); cpu.Close() }()
		} else {
			cpu.Close()
		}
	}
	defer writeProfile("allocs", base+".allocs.pprof")
	return f()
}

func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	pprof.Lookup(name).WriteTo(f, 0)
}

// slug makes a contender's name a file name: "tunnel, defaults" → "tunnel-defaults".
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}
