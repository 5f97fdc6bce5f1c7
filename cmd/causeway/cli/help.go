package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// helpText is what -h shows for one command, besides its flags.
type helpText struct {
	summary, usage, example string
}

// help holds every command's help in one place, so that all of them look
// alike: a one-line description, the usage, the flags, an example.
var help = map[string]helpText{
	"edge": {"run the gateway edge from a routes file",
		"causeway edge [-config FILE] [flags]",
		"causeway edge -config /etc/causeway/causeway.yaml -log-level info"},
	"sidecar": {"run the mesh sidecar beside a service",
		"causeway sidecar [-config FILE] [flags]",
		"causeway sidecar -config /etc/causeway/sidecar.yaml"},
	"validate": {"check a routes or sidecar file: print every error (exit 1) or warning (exit 0) with file:line:col",
		"causeway validate FILE",
		"causeway validate causeway.yaml"},
	"version": {"print the version (-plugins: the compiled-in plugins)",
		"causeway version [-plugins]",
		"causeway version -plugins"},
	"build": {"build a causeway binary that includes out-of-tree plugins",
		"causeway build -with MODULE[@VERSION] [-with ...] [-replace MODULE=DIR] [-causeway VERSION] [-o FILE]",
		"causeway build -with github.com/acme/causeway-plugin-x@v1.2.0 -o ./causeway-custom"},
	"ca init": {"create a root CA for workload identities",
		"causeway ca init -trust-domain DOMAIN -dir DIR",
		"causeway ca init -trust-domain example.org -dir ca/"},
	"ca intermediate": {"create an intermediate CA, so that the root key can stay offline",
		"causeway ca intermediate -dir DIR -out DIR [-ttl DURATION]",
		"causeway ca intermediate -dir ca/ -out ca/int -ttl 8760h"},
	"ca issue": {"issue a workload certificate for a SPIFFE ID",
		"causeway ca issue -dir DIR -id SPIFFE_ID -out PREFIX [-ttl DURATION]",
		"causeway ca issue -dir ca/ -id spiffe://example.org/ns/shop/sa/orders -out mesh/orders -ttl 24h"},
	"dev jwt": {"make a signing key, its public key and JWKS (once), and print a signed token",
		"causeway dev jwt -dir DIR [-alg RS256|ES256] [-iss URL] [-aud AUD] [-sub SUB] [-claim NAME=VALUE ...] [-ttl DURATION]",
		"causeway dev jwt -dir dev/ -iss https://id.local/ -aud api -sub alice -claim scope='orders:read orders:write'"},
	"dev apikey": {"add an API key to a keys file (its SHA-256 only) and print the key",
		"causeway dev apikey -keys FILE -name NAME [-key KEY]",
		"causeway dev apikey -keys secrets/partner-keys.txt -name acme"},
	"completion": {"print a shell completion script (bash, zsh or fish) for causeway's commands, flags and files",
		"causeway completion bash|zsh|fish",
		"causeway completion bash > /etc/bash_completion.d/causeway"},
	"man": {"print the causeway(1) manual page (roff) with every command and flag",
		"causeway man",
		"causeway man > /usr/local/share/man/man1/causeway.1"},
	"ca verify": {"check certificate files the way peers will; print each one's ID and expiry",
		"causeway ca verify -bundle BUNDLE.pem CERT.pem [CERT.pem...]",
		"causeway ca verify -bundle ca/bundle.pem mesh/*.pem"},
}

// newFlagSet is an empty flag set for the command named name (as in the
// help table: "edge", "ca issue"). Each command's flag-set factory starts
// from it; withHelp then points it at the command's output.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// withHelp makes fs print errors to stderr, and its -h, -help and --help
// print the command's help and end it with exit code 0.
func withHelp(fs *flag.FlagSet, stderr io.Writer) *flag.FlagSet {
	fs.SetOutput(stderr)
	fs.Usage = func() { printHelp(stderr, fs.Name(), fs) }
	return fs
}

func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	h := help[name]
	fmt.Fprintf(w, "causeway %s: %s\n\nusage: %s\n", name, h.summary, h.usage)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
	if h.example != "" {
		fmt.Fprintf(w, "\nexample:\n  %s\n", h.example)
	}
}

// parseFlags parses args; ok is false when the command must end now with
// code: 0 after help was asked for, 2 after a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}
