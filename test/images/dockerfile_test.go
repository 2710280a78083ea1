package images

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The parts of a Dockerfile the checks read. The parser knows line
// continuations, comments (also inside continuations), parser directives
// and stages; it refuses heredocs and another escape character rather than
// misread them.

type instruction struct {
	Line  int      // first physical line, from 1
	Cmd   string   // upper case: FROM, RUN, COPY…
	Flags []string // leading --name=value of FROM, RUN, COPY, ADD
	Args  string   // the rest; continued lines joined by a space
}

// exec is the instruction's JSON (exec) form, ok false for the shell form.
func (in instruction) exec() (args []string, ok bool) {
	if !strings.HasPrefix(in.Args, "[") {
		return nil, false
	}
	if err := json.Unmarshal([]byte(in.Args), &args); err != nil {
		return nil, false // Docker runs an invalid JSON array as a shell command
	}
	return args, true
}

// flag is the value of --name=value, "" when absent.
func (in instruction) flag(name string) string {
	for _, f := range in.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// words are the arguments of the exec form, else split at white space.
func (in instruction) words() []string {
	if args, ok := in.exec(); ok {
		return args
	}
	return strings.Fields(in.Args)
}

type stage struct {
	Index        int
	Base, Name   string // Name is lower case, "" without AS
	Instructions []instruction
}

type dockerfile struct {
	Global []instruction // the ARGs before the first FROM
	Stages []*stage
}

var heredoc = regexp.MustCompile(`<<-?["']?[A-Za-z_]`)

func parse(src string) (*dockerfile, error) {
	df := &dockerfile{}
	var (
		logical  strings.Builder
		start    int
		inDirect = true // parser directives come first
	)
	add := func() error {
		text := strings.TrimSpace(logical.String())
		logical.Reset()
		if text == "" {
			return nil
		}
		cmd, rest := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			cmd, rest = text[:i], text[i+1:]
		}
		in := instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(rest)}
		switch in.Cmd {
		case "FROM", "RUN", "COPY", "ADD":
			for strings.HasPrefix(in.Args, "--") {
				f, rest, _ := strings.Cut(in.Args, " ")
				in.Flags = append(in.Flags, f)
				in.Args = strings.TrimSpace(rest)
			}
			if in.Cmd != "FROM" && heredoc.MatchString(in.Args) {
				return fmt.Errorf("line %d: heredocs are not supported by this parser", in.Line)
			}
		}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := &stage{Index: len(df.Stages)}
			switch {
			case len(f) == 1:
				st.Base = f[0]
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				st.Base, st.Name = f[0], strings.ToLower(f[2])
			default:
				return fmt.Errorf("line %d: FROM %s: want FROM image [AS name]", in.Line, in.Args)
			}
			df.Stages = append(df.Stages, st)
			return nil
		}
		if len(df.Stages) == 0 {
			if in.Cmd != "ARG" {
				return fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			df.Global = append(df.Global, in)
			return nil
		}
		last := df.Stages[len(df.Stages)-1]
		last.Instructions = append(last.Instructions, in)
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	continued := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimSpace(line)
		if inDirect {
			if k, v, ok := directive(trimmed); ok {
				if k == "escape" && v != `\` {
					return nil, fmt.Errorf("line %d: escape=%s is not supported by this parser", n, v)
				}
				continue
			}
			inDirect = false
		}
		// Comment and empty lines end nothing: Docker drops them, also
		// in the middle of a continued instruction.
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if !continued {
			start = n
		}
		body, more := strings.CutSuffix(line, `\`)
		logical.WriteString(body)
		logical.WriteByte(' ')
		continued = more
		if !continued {
			if err := add(); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if continued {
		return nil, fmt.Errorf("line %d: the file ends in a line continuation", start)
	}
	if len(df.Stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return df, nil
}

// directive reads a parser directive, "# key=value".
func directive(line string) (key, value string, ok bool) {
	rest, ok := strings.CutPrefix(line, "#")
	if !ok {
		return "", "", false
	}
	k, v, ok := strings.Cut(strings.TrimSpace(rest), "=")
	k = strings.ToLower(strings.TrimSpace(k))
	if !ok || (k != "syntax" && k != "escape" && k != "check") {
		return "", "", false
	}
	return k, strings.TrimSpace(v), true
}

// stageRef is the stage a --from value names (a name or an index) before
// stage at; nil for an image.
func (df *dockerfile) stageRef(ref string, at int) *stage {
	for _, st := range df.Stages[:at] {
		if strings.EqualFold(st.Name, ref) || strconv.Itoa(st.Index) == ref {
			return st
		}
	}
	return nil
}

func TestParse(t *testing.T) {
	df, err := parse(`# syntax=docker/dockerfile:1
# escape=\
ARG GO=1.26
FROM golang:${GO} as Build
# a comment
run --mount=type=cache,target=/root/.cache \
    # a comment inside a continuation
    echo a \

    b
FROM scratch
COPY --from=build --chmod=0555 /out/x /usr/local/bin/x
ENTRYPOINT ["/usr/local/bin/x", "--flag"]
CMD echo shell form
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(df.Global) != 1 || df.Global[0].Args != "GO=1.26" {
		t.Errorf("global %+v", df.Global)
	}
	if len(df.Stages) != 2 || df.Stages[0].Name != "build" || df.Stages[0].Base != "golang:${GO}" || df.Stages[1].Base != "scratch" {
		t.Fatalf("stages %+v", df.Stages)
	}
	run := df.Stages[0].Instructions[0]
	if run.Cmd != "RUN" || run.Line != 6 || !slices.Equal(run.Flags, []string{"--mount=type=cache,target=/root/.cache"}) ||
		strings.Join(strings.Fields(run.Args), " ") != "echo a b" {
		t.Errorf("run %+v", run)
	}
	final := df.Stages[1].Instructions
	if len(final) != 3 {
		t.Fatalf("final stage %+v", final)
	}
	if final[0].flag("from") != "build" || !slices.Equal(final[0].words(), []string{"/out/x", "/usr/local/bin/x"}) {
		t.Errorf("copy %+v", final[0])
	}
	if args, ok := final[1].exec(); !ok || !slices.Equal(args, []string{"/usr/local/bin/x", "--flag"}) {
		t.Errorf("entrypoint %+v", final[1])
	}
	if _, ok := final[2].exec(); ok {
		t.Errorf("CMD echo parsed as exec form")
	}
	if df.stageRef("BUILD", 1) != df.Stages[0] || df.stageRef("0", 1) != df.Stages[0] || df.stageRef("golang", 1) != nil {
		t.Error("stage references")
	}
	for src, want := range map[string]string{
		"RUN true\nFROM scratch":                           "before the first FROM",
		"FROM a AS":                                        "want FROM image",
		"FROM a\nRUN <<EOF\ntrue\nEOF":                     "heredocs",
		"# escape=`\nFROM a":                               "escape",
		"FROM a\nRUN true \\":                              "continuation",
		"# just a comment":                                 "no FROM",
		"FROM a\nCOPY <<-'END' /x\nEND":                    "heredocs",
		"ARG A\n# syntax=late is a comment\nRUN x\nFROM a": "before the first FROM",
	} {
		if _, err := parse(src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q) = %v, want an error with %q", src, err, want)
		}
	}
}

// root is the repository root (the main module's directory).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil || !strings.HasPrefix(string(b), "module github.com/clusterconnect/clusterconnect\n") {
		t.Fatalf("%s is not the repository root: %v", dir, err)
	}
	return dir
}

// binaries are the commands under cmd/ (a directory with a main.go).
func binaries(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, "cmd", e.Name(), "main.go")); e.IsDir() && err == nil {
			out = append(out, e.Name())
		}
	}
	if len(out) < 5 {
		t.Fatalf("binaries %v: want clusteragent, relay, kube-aad-proxy, guard, connectctl at least", out)
	}
	return out
}

// goVersion is the go directive of go.mod as major.minor ("1.26").
func goVersion(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

const versionVar = "github.com/clusterconnect/clusterconnect/pkg/version.Version"

var (
	ldflagsVersion = regexp.MustCompile(`-X[= ]` + regexp.QuoteMeta(versionVar) + `=\$(\{VERSION\}|VERSION\b)`)
	cgoEnv         = regexp.MustCompile(`(^|\s)CGO_ENABLED[= ]0\b`)
	cgoRun         = regexp.MustCompile(`(^|\s)CGO_ENABLED=0\s`)
	labelPair      = regexp.MustCompile(`(org\.opencontainers\.image\.[a-z]+)=("[^"]*"|\S+)`)
)

// check lists what is wrong with the Dockerfile of binary b; goMinor is
// the Go version of go.mod ("1.26").
func check(b, goMinor string, df *dockerfile) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	bin := "/usr/local/bin/" + b

	if len(df.Stages) < 2 {
		fail("%d stage(s): want a multi-stage build (the toolchain stays out of the image)", len(df.Stages))
	}
	final := df.Stages[len(df.Stages)-1]
	if !strings.HasPrefix(final.Base, "gcr.io/distroless/") && final.Base != "scratch" {
		fail("final stage FROM %s: want gcr.io/distroless/… or scratch", final.Base)
	}
	var user, entrypoint *instruction
	var copied *instruction
	labels := map[string]string{}
	finalArgs := map[string]bool{}
	for i := range final.Instructions {
		in := &final.Instructions[i]
		switch in.Cmd {
		case "RUN", "SHELL":
			fail("line %d: %s in the final stage: the image has no shell", in.Line, in.Cmd)
		case "USER":
			user = in
		case "ENTRYPOINT":
			entrypoint = in
		case "ARG":
			name, _, _ := strings.Cut(in.Args, "=")
			finalArgs[name] = true
		case "LABEL":
			for _, m := range labelPair.FindAllStringSubmatch(in.Args, -1) {
				labels[m[1]] = strings.Trim(m[2], `"`)
			}
		case "COPY":
			w := in.words()
			if from := in.flag("from"); from != "" && len(w) >= 2 {
				dst := w[len(w)-1]
				if dst == bin || (dst == "/usr/local/bin/" && path.Base(w[len(w)-2]) == b) {
					copied = in
				}
			}
		}
		if strings.Contains(in.Args, "/bin/sh") || slices.ContainsFunc(in.Flags, func(f string) bool { return strings.Contains(f, "/bin/sh") }) {
			fail("line %d: the final stage refers to /bin/sh, which it does not have", in.Line)
		}
	}
	switch {
	case user == nil:
		fail("the final stage sets no USER: it would run as root")
	default:
		uid, _, _ := strings.Cut(user.Args, ":")
		if n, err := strconv.Atoi(uid); (err != nil || n <= 0) && uid != "nonroot" {
			fail("line %d: USER %s: want a non-zero numeric uid (or nonroot)", user.Line, user.Args)
		}
	}
	if entrypoint == nil {
		fail("the final stage has no ENTRYPOINT")
	} else if args, ok := entrypoint.exec(); !ok {
		fail("line %d: ENTRYPOINT %s: want the exec form [\"%s\"] (the shell form needs /bin/sh)", entrypoint.Line, entrypoint.Args, bin)
	} else if !slices.Equal(args, []string{bin}) {
		fail("line %d: ENTRYPOINT %q: want [\"%s\"], the path the charts run", entrypoint.Line, args, bin)
	}
	for _, l := range []string{"source", "version", "title"} {
		if labels["org.opencontainers.image."+l] == "" {
			fail("the final stage lacks LABEL org.opencontainers.image.%s", l)
		}
	}
	if v := labels["org.opencontainers.image.title"]; v != "" && v != b {
		fail("LABEL org.opencontainers.image.title=%s: want %s", v, b)
	}
	if v := labels["org.opencontainers.image.version"]; strings.Contains(v, "VERSION") && !finalArgs["VERSION"] {
		fail("LABEL org.opencontainers.image.version uses VERSION, but the final stage declares no ARG VERSION")
	}

	if copied == nil {
		fail("no COPY --from=<build stage> to %s in the final stage", bin)
		return bad
	}
	build := df.stageRef(copied.flag("from"), len(df.Stages)-1)
	if build == nil {
		fail("line %d: COPY --from=%s: not an earlier stage of this Dockerfile", copied.Line, copied.flag("from"))
		return bad
	}
	bad = append(bad, checkBuild(b, goMinor, build, copied.words()[0])...)
	return bad
}

// checkBuild checks the stage that builds binary b into out.
func checkBuild(b, goMinor string, st *stage, out string) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if want := "golang:" + goMinor; st.Base != want && !strings.HasPrefix(st.Base, want+".") && !strings.HasPrefix(st.Base, want+"-") {
		fail("build stage FROM %s: want %s, the Go of go.mod", st.Base, want)
	}
	cgoOff := false
	versionArg := false
	modules, download, source, goBuild := -1, -1, -1, -1
	for i, in := range st.Instructions {
		switch in.Cmd {
		case "ENV":
			if cgoEnv.MatchString(in.Args) {
				cgoOff = true
			}
		case "ARG":
			if name, _, _ := strings.Cut(in.Args, "="); name == "VERSION" {
				versionArg = true
			}
		case "COPY":
			w := in.words()
			if slices.Contains(w, "go.mod") && slices.Contains(w, "go.sum") && modules < 0 {
				modules = i
			}
			if len(w) == 2 && w[0] == "." && source < 0 {
				source = i
			}
		case "RUN":
			if strings.Contains(in.Args, "go mod download") && download < 0 {
				download = i
			}
			before, _, ok := strings.Cut(in.Args, "go build")
			if !ok {
				continue
			}
			goBuild = i
			if cgoRun.MatchString(before) {
				cgoOff = true
			}
			if !cgoOff {
				fail("line %d: go build without CGO_ENABLED=0: the final image has no libc", in.Line)
			}
			if !ldflagsVersion.MatchString(in.Args) {
				fail("line %d: go build does not stamp -X %s=${VERSION}", in.Line, versionVar)
			} else if !versionArg {
				fail("line %d: the build uses ${VERSION}, but the stage declares no ARG VERSION before it", in.Line)
			}
			if !strings.Contains(in.Args, "-trimpath") {
				fail("line %d: go build without -trimpath", in.Line)
			}
			if !regexp.MustCompile(`\s\./cmd/` + regexp.QuoteMeta(b) + `(\s|$)`).MatchString(in.Args + " ") {
				fail("line %d: go build does not build ./cmd/%s", in.Line, b)
			}
			if !regexp.MustCompile(`\s-o\s+` + regexp.QuoteMeta(out) + `\s`).MatchString(in.Args + " ") {
				fail("line %d: go build does not write %s, which the final stage copies", in.Line, out)
			}
		}
	}
	if goBuild < 0 {
		fail("the build stage has no RUN … go build")
	}
	if modules < 0 || download < modules || source < download {
		fail("modules not in their own layer: want COPY go.mod go.sum, then RUN go mod download, then COPY . . (instructions %d, %d, %d)", modules, download, source)
	}
	return bad
}

func TestDockerfiles(t *testing.T) {
	dir := root(t)
	goMinor := goVersion(t, dir)
	for _, b := range binaries(t, dir) {
		t.Run(b, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(dir, "cmd", b, "Dockerfile"))
			if err != nil {
				t.Fatalf("every binary has an image: %v", err)
			}
			df, err := parse(string(src))
			if err != nil {
				t.Fatalf("cmd/%s/Dockerfile: %v", b, err)
			}
			for _, p := range check(b, goMinor, df) {
				t.Errorf("cmd/%s/Dockerfile: %s", b, p)
			}
		})
	}
}

// TestChecksFail proves each check: a change to a good Dockerfile that
// breaks one rule must be reported.
func TestChecksFail(t *testing.T) {
	dir := root(t)
	goMinor := goVersion(t, dir)
	good, err := os.ReadFile(filepath.Join(dir, "cmd", "relay", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parse(string(good))
	if err != nil {
		t.Fatal(err)
	}
	if bad := check("relay", goMinor, df); len(bad) > 0 {
		t.Fatalf("the relay's Dockerfile must pass to start from: %v", bad)
	}
	single := &dockerfile{Stages: []*stage{{Base: df.Stages[1].Base, Instructions: df.Stages[1].Instructions}}}
	if bad := check("relay", goMinor, single); !slices.ContainsFunc(bad, func(p string) bool { return strings.Contains(p, "want a multi-stage build") }) {
		t.Errorf("the final stage alone: reported %q, want a multi-stage build", bad)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"FROM golang:" + goMinor + " AS build", "FROM golang:1.19 AS build", "want golang:" + goMinor},
		{"FROM gcr.io/distroless/static-debian12:nonroot", "FROM golang:" + goMinor, "want gcr.io/distroless/"},
		{"COPY --from=build /out/relay /usr/local/bin/relay", "COPY --from=build /out/relay /usr/local/bin/relay\nRUN chmod 0555 /usr/local/bin/relay", "RUN in the final stage"},
		{"USER 65532:65532", "USER 65532:65532\nSHELL [\"/bin/sh\", \"-c\"]", "SHELL in the final stage"},
		{`ENTRYPOINT ["/usr/local/bin/relay"]`, `ENTRYPOINT ["/bin/sh", "-c", "/usr/local/bin/relay"]`, "refers to /bin/sh"},
		{`ENTRYPOINT ["/usr/local/bin/relay"]`, `ENTRYPOINT /usr/local/bin/relay`, "want the exec form"},
		{`ENTRYPOINT ["/usr/local/bin/relay"]`, `ENTRYPOINT ["/relay"]`, `want ["/usr/local/bin/relay"]`},
		{`ENTRYPOINT ["/usr/local/bin/relay"]`, ``, "no ENTRYPOINT"},
		{"USER 65532:65532", "USER 0", "want a non-zero numeric uid"},
		{"USER 65532:65532", "USER relay", "want a non-zero numeric uid"},
		{"USER 65532:65532", "", "sets no USER"},
		{"COPY --from=build /out/relay /usr/local/bin/relay", "COPY --from=build /out/relay /relay", "no COPY --from=<build stage> to /usr/local/bin/relay"},
		{"COPY --from=build /out/relay", "COPY --from=builder /out/relay", "not an earlier stage"},
		{"CGO_ENABLED=0 go build", "go build", "without CGO_ENABLED=0"},
		{"-X github.com/clusterconnect/clusterconnect/pkg/version.Version=${VERSION}", "-X main.version=${VERSION}", "does not stamp"},
		{"ARG VERSION=dev\n# Static", "# Static", "declares no ARG VERSION before it"},
		{"go build -trimpath", "go build", "without -trimpath"},
		{"./cmd/relay\n", "./cmd/guard\n", "does not build ./cmd/relay"},
		{"-o /out/relay", "-o /out/relay2", "does not write /out/relay"},
		{"COPY go.mod go.sum ./\nRUN go mod download\nCOPY . .", "COPY . .\nRUN go mod download", "own layer"},
		{`org.opencontainers.image.title="relay"`, `org.opencontainers.image.name="relay"`, "lacks LABEL org.opencontainers.image.title"},
		{`org.opencontainers.image.title="relay"`, `org.opencontainers.image.title="guard"`, "title=guard: want relay"},
	} {
		src := strings.Replace(string(good), tc.old, tc.new, 1)
		if src == string(good) {
			t.Errorf("%q is not in cmd/relay/Dockerfile: the case tests nothing", tc.old)
			continue
		}
		df, err := parse(src)
		if err != nil {
			t.Errorf("%q -> %q: %v", tc.old, tc.new, err)
			continue
		}
		bad := check("relay", goMinor, df)
		if !slices.ContainsFunc(bad, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%q -> %q: reported %q, want a problem with %q", tc.old, tc.new, bad, tc.want)
		}
	}
}

// TestChartCommandsHaveImages: every /usr/local/bin/<name> a chart runs is
// the entrypoint of cmd/<name>/Dockerfile (which TestDockerfiles checks).
func TestChartCommandsHaveImages(t *testing.T) {
	dir := root(t)
	bins := binaries(t, dir)
	ref := regexp.MustCompile(`/usr/local/bin/([A-Za-z0-9._-]+)`)
	seen := map[string]bool{}
	templates, err := filepath.Glob(filepath.Join(dir, "charts", "*", "templates"))
	if err != nil || len(templates) == 0 {
		t.Fatalf("no chart templates: %v", err)
	}
	for _, tdir := range templates {
		err := filepath.WalkDir(tdir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
				seen[m[1]] = true
				if !slices.Contains(bins, m[1]) {
					t.Errorf("%s runs %s, but there is no cmd/%s/Dockerfile building it", rel, m[0], m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !seen["relay"] {
		t.Errorf("no chart runs /usr/local/bin/relay (found %v): the relay chart's command changed?", seen)
	}
}

// TestDockerignoreKeepsSources: .dockerignore leaves in the build context
// go.mod, go.sum, every Go package of the main module and the charts (they
// are embedded).
func TestDockerignoreKeepsSources(t *testing.T) {
	dir := root(t)
	b, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ig, err := parseIgnore(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if !ig.excluded(".git") || !ig.excluded("bin/relay") {
		t.Error(".dockerignore should leave out .git and bin/")
	}
	need := []string{"go.mod", "go.sum"}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if (strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go")) || strings.HasPrefix(rel, "charts/") {
			need = append(need, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range need {
		if ig.excluded(p) {
			t.Errorf(".dockerignore leaves %s out of the build context", p)
		}
	}
	for _, p := range []string{"cmd/relay/main.go", "charts/charts.go"} {
		if !slices.Contains(need, p) {
			t.Errorf("the walk missed %s", p)
		}
	}
}

type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

type ignore []ignoreRule

// parseIgnore reads .dockerignore patterns the way Docker does: cleaned,
// relative to the context root, * and ? within a path element, ** across
// elements, ! re-including; a pattern matching a directory covers what is in it.
func parseIgnore(src string) (ignore, error) {
	var out ignore
	for line := range strings.Lines(src) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, strings.TrimSpace(rest)
		}
		pat := strings.TrimPrefix(path.Clean("/"+line), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(pat); i++ {
			switch c := pat[i]; {
			case strings.HasPrefix(pat[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(pat[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		rx, err := regexp.Compile(re.String())
		if err != nil {
			return nil, fmt.Errorf(".dockerignore %q: %w", line, err)
		}
		r.re = rx
		out = append(out, r)
	}
	return out, nil
}

func (ig ignore) excluded(p string) bool {
	out := false
	for _, r := range ig {
		if r.re.MatchString(p) {
			out = !r.negate
		}
	}
	return out
}

func TestIgnorePatterns(t *testing.T) {
	ig, err := parseIgnore("bin/\n**/*.test\n/docs\n*.md\n!README.md\n")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		"bin/relay": true, "bin": true, "cmd/bin/x": false, "relay/relay.test": true, "x.test": true,
		"docs/a.md": true, "NOTES.md": true, "README.md": false, "charts/README.md": false, "go.mod": false,
	} {
		if got := ig.excluded(p); got != want {
			t.Errorf("excluded(%s) = %v, want %v", p, got, want)
		}
	}
}

// TestMakeImages: make images builds every binary's image.
func TestMakeImages(t *testing.T) {
	dir := root(t)
	b, err := os.ReadFile(filepath.Join(dir, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGES \?= (.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Makefile has no IMAGES ?= line")
	}
	images := strings.Fields(string(m[1]))
	slices.Sort(images)
	bins := binaries(t, dir)
	slices.Sort(bins)
	if !slices.Equal(images, bins) {
		t.Errorf("Makefile IMAGES %v, want the binaries %v", images, bins)
	}
	if !regexp.MustCompile(`(?m)^\.PHONY:.*\bimages\b`).Match(b) {
		t.Error("images is not .PHONY")
	}
}
