package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
)

func runMan(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		printHelp(stderr, "man", newFlagSet("man"))
		return 0
	}
	if len(args) > 0 {
		printHelp(stderr, "man", newFlagSet("man"))
		return 2
	}
	writeMan(stdout, commandTree())
	return 0
}

// roff escapes text for a roff text line: backslashes and hyphens (a
// plain '-' may print as a hyphen, not the minus of a flag), and a leading
// '.' or a quote that would make the line a request.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// writeMan writes causeway(1): every command with its description, usage,
// flags (read from the same flag sets -h prints) and example.
func writeMan(w io.Writer, tree []cmdInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p(".TH CAUSEWAY 1 \"\" \"causeway %s\" \"Causeway Manual\"\n", roff(version()))
	p(".SH NAME\ncauseway \\- API gateway and service\\-mesh edge\n")
	p(".SH SYNOPSIS\n.B causeway\n.I command\n.RI [ flags ]\n.br\n.B causeway help\n.I command\n.br\n.B causeway \\-\\-version\n")
	_, _ = io.WriteString(w, `.SH DESCRIPTION
Causeway routes HTTP traffic from clients to upstream services (the
.B edge
command) and, beside each service, terminates and originates mutual TLS
with workload identities (the
.B sidecar
command).
Both read a YAML file that
.B causeway validate
checks, reporting every problem at once with its file:line:col.
Flags are written with one dash (\fB\-config\fR); two also work.
.SH COMMANDS
`)
	for _, c := range flattenTree(tree) {
		writeManCommand(w, c)
	}
	_, _ = io.WriteString(w, `.SH SHELL COMPLETION
.B causeway completion bash
(or
.BR zsh ,
.BR fish )
prints a completion script made from the same flag definitions as this page:
.PP
.RS
.nf
causeway completion bash > /etc/bash_completion.d/causeway
causeway completion zsh > "${fpath[1]}/_causeway"
causeway completion fish > ~/.config/fish/completions/causeway.fish
.fi
.RE
.SH EXIT STATUS
.TP
.B 0
success, or help asked for with \fB\-h\fR
.TP
.B 1
the command failed (a configuration with errors, a file that cannot be written)
.TP
.B 2
bad usage: an unknown command or flag, a missing argument
.SH ENVIRONMENT
.TP
.B GOGC
the garbage collector's target for \fBedge\fR and \fBsidecar\fR when \fB\-gogc\fR is not given
.TP
.B GOMEMLIMIT
the garbage collector's soft memory limit; without it, 90% of the container's memory limit
.TP
.B SPIFFE_ENDPOINT_SOCKET
the SPIFFE Workload API address when an identity source is spire and names no socket
.SH SIGNALS
.TP
.B SIGHUP
reload the routes or sidecar file
.TP
.BR SIGTERM ", " SIGINT
stop accepting, let requests in flight finish, exit
.TP
.B SIGUSR2
start a new process on the same listening sockets (a binary upgrade)
.SH SEE ALSO
The routes file reference: docs/routes.md; the mesh and the sidecar file: docs/mesh.md,
in the Causeway source tree.
`)
}

func writeManCommand(w io.Writer, c cmdInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	h := help[c.path]
	summary := h.summary
	if summary == "" {
		summary = c.summary
	}
	p(".SS \"causeway %s\"\n%s\n", c.path, roff(summary))
	if len(c.subs) > 0 {
		var names []string
		for _, s := range c.subs {
			names = append(names, `\fB`+roff(s.path)+`\fR`)
		}
		p(".PP\nSubcommands: %s.\n", strings.Join(names, ", "))
		return
	}
	if h.usage != "" {
		p(".PP\n.RS\n.nf\n%s\n.fi\n.RE\n", roff(h.usage))
	}
	for _, f := range c.flags {
		p(".TP\n\\fB\\-%s\\fR", roff(f.name))
		if f.metavar != "" {
			p(" \\fI%s\\fR", roff(f.metavar))
		}
		p("\n%s", roff(f.usage))
		if f.def != "" {
			p(" (default: %s)", roff(f.def))
		}
		p("\n")
	}
	if h.example != "" {
		p(".PP\nExample:\n.RS\n.nf\n%s\n.fi\n.RE\n", roff(h.example))
	}
}
