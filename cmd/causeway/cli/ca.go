package cli

import (
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/causewayhq/causeway/mesh"
)

// caCommands are ca's subcommands.
var caCommands = []Command{
	{Name: "init", Summary: help["ca init"].summary, Run: runCAInit,
		Flags: func() *flag.FlagSet { f, _ := caInitFlags(); return f.FlagSet }},
	{Name: "intermediate", Summary: help["ca intermediate"].summary, Run: runCAIntermediate,
		Flags: func() *flag.FlagSet { f, _ := caIntermediateFlags(); return f.FlagSet }},
	{Name: "issue", Summary: help["ca issue"].summary, Run: runCAIssue,
		Flags: func() *flag.FlagSet { f, _ := caIssueFlags(); return f.FlagSet }},
	{Name: "verify", Summary: help["ca verify"].summary, Run: runCAVerify, Args: Args{Files: true},
		Flags: func() *flag.FlagSet { fs, _ := caVerifyFlags(); return fs }},
}

func caUsage(w io.Writer) {
	fmt.Fprintln(w, `usage:
  causeway ca init -trust-domain example.org -dir ca/ [-ttl 87600h]
      create a root CA: ca/root.pem, ca/root-key.pem (0600), ca/bundle.pem
  causeway ca intermediate -dir ca/ -out ca/int [-ttl 8760h]
      create an intermediate CA signed by the CA in -dir, so the root key can stay offline
  causeway ca issue -dir ca/ -id spiffe://example.org/ns/shop/sa/orders -out mesh/orders [-ttl 24h]
      issue a workload certificate: mesh/orders.pem (leaf + chain), mesh/orders-key.pem (0600)
  causeway ca verify -bundle ca/bundle.pem mesh/orders.pem [FILE...]
      check certificate files the way peers will; print each one's ID and expiry`)
}

func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		caUsage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		caUsage(stderr)
		return 0
	}
	ca, _ := lookupCommand("ca")
	sub, ok := ca.findSub(args[0])
	if !ok {
		names := make([]string, 0, len(ca.Sub))
		for _, c := range ca.Sub {
			names = append(names, c.Name)
		}
		sort.Strings(names)
		fmt.Fprintf(stderr, "causeway ca: unknown subcommand %q (one of %s)\n", args[0], strings.Join(names, ", "))
		return 2
	}
	return sub.Run(ctx, args[1:], stdout, stderr)
}

// caFlags is a flag set whose parse also refuses stray arguments and
// missing required flags, printing usage on stderr.
type caFlags struct {
	*flag.FlagSet
	name     string
	required []string
	stderr   io.Writer
}

func newCAFlags(name string) *caFlags {
	return &caFlags{FlagSet: newFlagSet("ca " + name), name: name}
}

func (f *caFlags) requiredString(name, usage string) *string {
	f.required = append(f.required, name)
	return f.String(name, "", usage+" (required)")
}

// parse returns 0 when the command may go on, else the exit code.
func (f *caFlags) parse(args []string, stderr io.Writer) (int, bool) {
	f.stderr = stderr
	withHelp(f.FlagSet, stderr)
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if f.NArg() > 0 {
		fmt.Fprintf(f.stderr, "causeway ca %s: unexpected argument %q\n", f.name, f.Arg(0))
		f.Usage()
		return 2, false
	}
	for _, r := range f.required {
		if f.Lookup(r).Value.String() == "" {
			fmt.Fprintf(f.stderr, "causeway ca %s: -%s is required\n", f.name, r)
			f.Usage()
			return 2, false
		}
	}
	return 0, true
}

func positiveTTL(stderr io.Writer, cmd string, ttl time.Duration) bool {
	if ttl <= 0 {
		fmt.Fprintf(stderr, "causeway ca %s: -ttl must be positive (found %s)\n", cmd, ttl)
		return false
	}
	return true
}

type caInitOpts struct {
	td, dir *string
	ttl     *time.Duration
}

func caInitFlags() (*caFlags, caInitOpts) {
	f := newCAFlags("init")
	return f, caInitOpts{
		td:  f.requiredString("trust-domain", "trust domain the CA issues for, e.g. example.org"),
		dir: f.requiredString("dir", "create the CA in `DIR`"),
		ttl: f.Duration("ttl", mesh.DefaultRootTTL, "lifetime of the root certificate"),
	}
}

func runCAInit(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f, o := caInitFlags()
	td, dir, ttl := o.td, o.dir, o.ttl
	if code, ok := f.parse(args, stderr); !ok {
		return code
	}
	if !positiveTTL(stderr, "init", *ttl) {
		return 2
	}
	if err := mesh.InitCA(*dir, *td, mesh.WithTTL(*ttl)); err != nil {
		fmt.Fprintln(stderr, "causeway", err)
		return 1
	}
	fmt.Fprintf(stdout, "created root CA for %s: %s, %s (keep it secret), %s (distribute to every workload)\n", *td,
		filepath.Join(*dir, mesh.RootCertFile), filepath.Join(*dir, mesh.RootKeyFile), filepath.Join(*dir, mesh.BundleFile))
	return 0
}

type caIntermediateOpts struct {
	dir, out *string
	ttl      *time.Duration
}

func caIntermediateFlags() (*caFlags, caIntermediateOpts) {
	f := newCAFlags("intermediate")
	return f, caIntermediateOpts{
		dir: f.requiredString("dir", "the signing CA's `DIR` (root or intermediate)"),
		out: f.requiredString("out", "create the intermediate CA in `DIR`"),
		ttl: f.Duration("ttl", mesh.DefaultIntermediateTTL, "lifetime of the intermediate certificate"),
	}
}

func runCAIntermediate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f, o := caIntermediateFlags()
	dir, out, ttl := o.dir, o.out, o.ttl
	if code, ok := f.parse(args, stderr); !ok {
		return code
	}
	if !positiveTTL(stderr, "intermediate", *ttl) {
		return 2
	}
	if err := mesh.IssueIntermediate(*dir, *out, mesh.WithTTL(*ttl)); err != nil {
		fmt.Fprintln(stderr, "causeway", err)
		return 1
	}
	fmt.Fprintf(stdout, "created intermediate CA in %s; issue with: causeway ca issue -dir %s ...\n", *out, *out)
	return 0
}

type caIssueOpts struct {
	dir, id, out *string
	ttl          *time.Duration
}

func caIssueFlags() (*caFlags, caIssueOpts) {
	f := newCAFlags("issue")
	return f, caIssueOpts{
		dir: f.requiredString("dir", "the issuing CA's `DIR` (root or intermediate)"),
		id:  f.requiredString("id", "SPIFFE ID of the workload, e.g. spiffe://example.org/ns/shop/sa/orders"),
		out: f.requiredString("out", "output `PREFIX`: writes PREFIX.pem and PREFIX-key.pem"),
		ttl: f.Duration("ttl", mesh.DefaultLeafTTL, "lifetime of the certificate (keep it short: there is no revocation)"),
	}
}

func runCAIssue(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f, o := caIssueFlags()
	dir, idFlag, out, ttl := o.dir, o.id, o.out, o.ttl
	if code, ok := f.parse(args, stderr); !ok {
		return code
	}
	if !positiveTTL(stderr, "issue", *ttl) {
		return 2
	}
	id, err := mesh.ParseID(*idFlag)
	if err != nil {
		fmt.Fprintln(stderr, "causeway ca issue: -id:", err)
		return 2
	}
	if err := mesh.IssueLeaf(*dir, id, *ttl, *out); err != nil {
		fmt.Fprintln(stderr, "causeway", err)
		return 1
	}
	fmt.Fprintf(stdout, "issued %s for %s: %s.pem, %s-key.pem\n", id, *ttl, *out, *out)
	return 0
}

func caVerifyFlags() (*flag.FlagSet, *string) {
	fs := newFlagSet("ca verify")
	return fs, fs.String("bundle", "", "trust bundle `FILE` to verify against (required)")
}

func runCAVerify(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, bundle := caVerifyFlags()
	withHelp(fs, stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *bundle == "" || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: causeway ca verify -bundle BUNDLE.pem CERT.pem [CERT.pem...]")
		return 2
	}
	now := time.Now()
	code := 0
	verified := 0
	for _, file := range fs.Args() {
		// A glob such as mesh/*.pem also names the private keys beside
		// the certificates (and the bundle itself): say what they are and
		// go on, rather than fail on "no certificate".
		if isPrivateKeyFile(file) {
			fmt.Fprintf(stdout, "%s: skipped, a private key (not a certificate)\n", file)
			continue
		}
		if same, _ := sameFile(file, *bundle); same {
			fmt.Fprintf(stdout, "%s: skipped, the trust bundle itself\n", file)
			continue
		}
		verified++
		id, chain, err := mesh.VerifyFile(file, *bundle, now)
		if err != nil {
			fmt.Fprintln(stderr, "causeway ca verify:", err)
			code = 1
			continue
		}
		leaf := chain[0]
		fmt.Fprintf(stdout, "%s: %s, valid until %s (%s left), %d intermediate(s)\n", file, id,
			leaf.NotAfter.UTC().Format(time.RFC3339), leaf.NotAfter.Sub(now).Round(time.Minute), len(chain)-1)
	}
	if verified == 0 {
		fmt.Fprintln(stderr, "causeway ca verify: no certificate among the files given (only keys or the bundle)")
		return 1
	}
	return code
}

// isPrivateKeyFile reports whether file holds a PEM private key: by its
// content, so that a key under any name is recognised, and by the -key.pem
// name ca issue gives keys when the file cannot be read (the error then
// comes from the certificate's own check).
func isPrivateKeyFile(file string) bool {
	data, err := os.ReadFile(file)
	if err != nil {
		return strings.HasSuffix(file, "-key.pem")
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return true
		}
	}
}

func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}
