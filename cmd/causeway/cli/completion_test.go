package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// causewayOutput runs `causeway ARGS...` and returns its stdout.
func causewayOutput(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("causeway %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// needShell is the path of a shell the test runs; without it the test
// cannot say anything, so it is skipped with the reason (make deps,
// which make test runs first, installs zsh and fish).
func needShell(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each script is valid for its shell's own parser.
func TestCompletionScriptsParse(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			bin := needShell(t, sh)
			script := writeScript(t, "causeway."+sh, causewayOutput(t, "completion", sh))
			out, err := exec.Command(bin, "-n", script).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Fatalf("%s -n: %v\n%s", sh, err, out)
			}
		})
	}
	var stderr bytes.Buffer
	if code := run([]string{"completion", "tcsh"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage: causeway completion bash|zsh|fish") {
		t.Fatalf("an unknown shell: exit %d, %s", code, stderr.String())
	}
}

// bashComplete sources the bash script in a real bash and calls its
// completion function as bash would on TAB, with COMP_WORDS and
// COMP_CWORD set for words (the last being the word under the cursor).
func bashComplete(t *testing.T, script, dir string, words ...string) []string {
	t.Helper()
	args := append([]string{"--norc", "--noprofile", "-c", `source "$0" || exit 9
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
_causeway causeway "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"`, script}, words...)
	cmd := exec.Command(needShell(t, "bash"), args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	return got
}

func dashed(fs []flagInfo) []string {
	var out []string
	for _, f := range fs {
		out = append(out, "-"+f.name)
	}
	slices.Sort(out)
	return out
}

func TestBashCompletionCompletes(t *testing.T) {
	script := writeScript(t, "causeway.bash", causewayOutput(t, "completion", "bash"))
	dir := t.TempDir()
	for _, f := range []string{"routes.yaml", "routes-old.yaml", "sidecar.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"ca", "mesh"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	edgeFS, _ := edgeFlags()
	jwtFS, _ := devJWTFlags()
	var top []string
	for _, c := range commandTree() {
		top = append(top, c.name())
	}
	top = append(top, "help")
	slices.Sort(top)
	for _, tt := range []struct {
		name  string
		words []string
		want  []string
	}{
		{"a command from its start", []string{"causeway", "va"}, []string{"validate"}},
		{"every command", []string{"causeway", ""}, top},
		{"help names commands", []string{"causeway", "help", "si"}, []string{"sidecar"}},
		{"the edge's flags", []string{"causeway", "edge", "-"}, dashed(flagsOf(edgeFS))},
		{"the edge's flags with nothing typed", []string{"causeway", "edge", ""}, dashed(flagsOf(edgeFS))},
		{"one flag from its start", []string{"causeway", "edge", "-log-f"}, []string{"-log-format"}},
		{"a file flag's value is a file", []string{"causeway", "edge", "-config", "r"}, []string{"routes-old.yaml", "routes.yaml"}},
		{"after --config too", []string{"causeway", "sidecar", "--config", "s"}, []string{"sidecar.yaml"}},
		{"-config=VALUE", []string{"causeway", "edge", "-config", "=", "routes."}, []string{"routes.yaml"}},
		{"a plain value is not completed", []string{"causeway", "dev", "jwt", "-iss", ""}, nil},
		{"a value from its set", []string{"causeway", "edge", "-log-level", "w"}, []string{"warn"}},
		{"every value of the set", []string{"causeway", "validate", "-kind", ""}, []string{"edge", "sidecar"}},
		{"a value after --flag", []string{"causeway", "sidecar", "--log-format", ""}, []string{"json", "text"}},
		{"a bool flag takes no value: flags follow", []string{"causeway", "edge", "-pprof", "-g"}, []string{"-gogc"}},
		{"subcommands", []string{"causeway", "ca", "i"}, []string{"init", "intermediate", "issue"}},
		{"a subcommand's flags", []string{"causeway", "dev", "jwt", "-"}, dashed(flagsOf(jwtFS))},
		{"a directory flag's value is a directory", []string{"causeway", "ca", "init", "-dir", ""}, []string{"ca", "mesh"}},
		{"a PREFIX is a file path", []string{"causeway", "ca", "issue", "-out", "me"}, []string{"mesh"}},
		{"arguments that are files", []string{"causeway", "validate", "s"}, []string{"sidecar.yaml"}},
		{"a flag among file arguments", []string{"causeway", "validate", "-s"}, []string{"-skip-files"}},
		{"ca verify's certificates", []string{"causeway", "ca", "verify", "-bundle", "ca", "rou"}, []string{"routes-old.yaml", "routes.yaml"}},
		{"the shells", []string{"causeway", "completion", ""}, []string{"bash", "fish", "zsh"}},
		{"an unknown command completes nothing", []string{"causeway", "nope", "-"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := bashComplete(t, script, dir, tt.words...)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("%q: got %q, want %q", tt.words, got, tt.want)
			}
		})
	}
}

// fish is asked for completions as on TAB (complete -C), with the script
// sourced.
func TestFishCompletionCompletes(t *testing.T) {
	fish := needShell(t, "fish")
	script := writeScript(t, "causeway.fish", causewayOutput(t, "completion", "fish"))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "routes.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	edgeFS, _ := edgeFlags()
	for _, tt := range []struct {
		name, line string
		want       []string // each a completion that must be offered
		not        []string // and some that must not
	}{
		{"a command from its start", "causeway va", []string{"validate"}, []string{"edge"}},
		{"the edge's flags", "causeway edge -", dashed(flagsOf(edgeFS)), []string{"-kind"}},
		{"a file flag's value", "causeway edge -config rou", []string{"routes.yaml"}, nil},
		{"subcommands", "causeway ca ", []string{"init", "intermediate", "issue", "verify"}, []string{"edge"}},
		{"a subcommand's flags", "causeway ca issue -", []string{"-dir", "-id", "-out", "-ttl"}, []string{"-trust-domain"}},
		{"files for validate", "causeway validate rou", []string{"routes.yaml"}, nil},
		{"the shells", "causeway completion ", []string{"bash", "zsh", "fish"}, nil},
		{"a value from its set", "causeway edge -log-format ", []string{"json", "text"}, []string{"routes.yaml"}},
		{"the algorithms", "causeway dev jwt -alg ", []string{"RS256", "ES256"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, tt.line)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			var got []string
			for _, l := range strings.Split(string(out), "\n") {
				if w, _, _ := strings.Cut(l, "\t"); w != "" {
					got = append(got, w)
				}
			}
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("%q: %q not offered (got %q)", tt.line, w, got)
				}
			}
			for _, w := range tt.not {
				if slices.Contains(got, w) {
					t.Errorf("%q: %q offered (got %q)", tt.line, w, got)
				}
			}
		})
	}
}

// zshScript drives an interactive zsh on a pseudo-terminal (zsh/zpty): it
// sources the completion script after compinit, types $2 and TAB, and
// prints what the terminal showed. Each read waits for a marker the
// shell prints (split in the typed text so that its echo cannot match),
// so nothing depends on timing: the prompt proves the line editor is
// reading before the line is typed.
const zshScript = `zmodload zsh/zpty || exit 3
zpty z zsh -f -i || exit 4
zpty -w z "PS1='<P''S>' RPROMPT=''; autoload -U compinit; compinit -u -D -d /dev/null; source ${(q)1}; print -r -- __REA''DY__"
zpty -r z out '*__READY__*<PS>*' || exit 5
zpty -w -n z "${2}"$'\t'
zpty -w -n z $'\x15'
zpty -w z 'print __DO""NE__'
zpty -r z out '*__DONE__*' || exit 6
zpty -d z
print -r -- "$out"
`

// zsh completes as bash and fish do, driven as a user would drive it.
func TestZshCompletionCompletes(t *testing.T) {
	zsh := needShell(t, "zsh")
	script := writeScript(t, "_causeway", causewayOutput(t, "completion", "zsh"))
	driver := writeScript(t, "drive.zsh", zshScript)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "routes.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, line string
		want, not  []string
	}{
		{"a command from its start", "causeway va", []string{"validate"}, nil},
		{"the edge's flags, described", "causeway edge -", []string{"-config", "-log-format", "-pprof", "log LEVEL: debug, info, warn, error"}, []string{"-kind"}},
		{"a value from its set", "causeway edge -log-level ", []string{"debug", "warn"}, []string{"routes.yaml"}},
		{"a file flag's value", "causeway edge -config rou", []string{"routes.yaml"}, nil},
		{"subcommands", "causeway ca ", []string{"init", "intermediate", "issue", "verify"}, []string{"sidecar"}},
		{"a subcommand's flags", "causeway dev jwt -", []string{"-alg", "-claim", "-dir"}, []string{"-keys"}},
		{"files for validate", "causeway validate rou", []string{"routes.yaml"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard against a hang, not a measure
			defer cancel()
			cmd := exec.CommandContext(ctx, zsh, "-f", driver, script, tt.line)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TERM=dumb")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("zsh: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%q: %q not offered:\n%s", tt.line, w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(string(out), w) {
					t.Errorf("%q: %q offered:\n%s", tt.line, w, out)
				}
			}
		})
	}
}

// The man page formats without a warning.
func TestManPageFormats(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skipf("groff is not installed (make deps installs it): %v", err)
	}
	page := causewayOutput(t, "man")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, stderr.String())
	}
	if man, err := exec.LookPath("man"); err == nil {
		p := writeScript(t, "causeway.1", page)
		cmd := exec.Command(man, "-l", p)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=100")
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "causeway validate") {
			t.Fatalf("man -l: %v\n%s", err, out)
		}
	}
}

// Every command's flags are in its -h, the man page and each completion
// script, and every command has its help entry: all are made from the
// one flag-set factory, and this keeps it so.
func TestHelpManCompletionAgree(t *testing.T) {
	page := causewayOutput(t, "man")
	scripts := map[string]string{}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		scripts[sh] = causewayOutput(t, "completion", sh)
	}
	for _, c := range flattenTree(commandTree()) {
		t.Run(c.path, func(t *testing.T) {
			if !strings.Contains(page, `.SS "causeway `+c.path+`"`) {
				t.Errorf("the man page has no section for %s", c.path)
			}
			for _, s := range scripts {
				if !strings.Contains(s, c.name()) {
					t.Errorf("a completion script lacks %s", c.path)
				}
			}
			if len(c.subs) > 0 {
				return
			}
			h, ok := help[c.path]
			if !ok || h.summary == "" || h.usage == "" || h.example == "" {
				t.Fatalf("no complete help entry for %s: %+v", c.path, h)
			}
			var stdout, stderr bytes.Buffer
			args := append(strings.Fields(c.path), "-h")
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("%s -h: exit %d", c.path, code)
			}
			var helpFlags []string
			for _, l := range strings.Split(stderr.String(), "\n") {
				if name, ok := strings.CutPrefix(l, "  -"); ok {
					name, _, _ = strings.Cut(name, " ")
					helpFlags = append(helpFlags, "-"+strings.TrimSpace(name))
				}
			}
			slices.Sort(helpFlags)
			if want := dashed(c.flags); !slices.Equal(helpFlags, want) {
				t.Fatalf("%s -h lists %q; its flag set %q", c.path, helpFlags, want)
			}
			bashCase := section(scripts["bash"], "    '"+c.path+"')\n", ";;")
			zshCase := section(scripts["zsh"], "    '"+c.path+"')\n", ";;")
			for _, f := range c.flags {
				if !strings.Contains(page, `\fB\-`+roff(f.name)+`\fR`) {
					t.Errorf("the man page lacks -%s of %s", f.name, c.path)
				}
				if !strings.Contains(bashCase, "-"+f.name) {
					t.Errorf("bash completion lacks -%s of %s", f.name, c.path)
				}
				if !strings.Contains(zshCase, "-"+f.name+"[") {
					t.Errorf("zsh completion lacks -%s of %s", f.name, c.path)
				}
				if !strings.Contains(scripts["fish"], `-n '__causeway_is "`+c.path+`"' -o '`+f.name+`'`) {
					t.Errorf("fish completion lacks -%s of %s", f.name, c.path)
				}
			}
		})
	}
}

// section is the text of s from start up to the next end.
func section(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.Index(s, end); j >= 0 {
		return s[:j]
	}
	return s
}

// A binary with more commands (a plugin's, registered by causeway build)
// completes and documents them too: the scripts are made from the
// registry, not from a list.
func TestCompletionFollowsTheRegistry(t *testing.T) {
	tree := append(commandTree(), cmdInfo{path: "zz-extra", summary: "an extra command", flags: []flagInfo{{name: "thing", metavar: "FILE", usage: "a `thing`", kind: fileFlag}}})
	var b, z, f, m bytes.Buffer
	bashCompletion(&b, tree)
	zshCompletion(&z, tree)
	fishCompletion(&f, tree)
	writeMan(&m, tree)
	for name, out := range map[string]string{"bash": b.String(), "zsh": z.String(), "fish": f.String(), "man": m.String()} {
		if !strings.Contains(out, "zz-extra") || !strings.Contains(out, "thing") {
			t.Errorf("%s lacks the extra command or its flag", name)
		}
	}
}
