package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/causewayhq/causeway/internal/filewatch"
	"github.com/causewayhq/causeway/routes"
)

// dnsQueryTimeout bounds one DNS exchange.
const dnsQueryTimeout = 2 * time.Second

// maxSRVWeight caps the weight an SRV record gives an endpoint (SRV
// weights go to 65535; ring_hash places points per unit of weight).
const maxSRVWeight = 100

// dnsSource resolves an upstream's dns (A and AAAA of host:port) or dns_srv
// name against one resolver, keeping the answers' TTLs: net.Resolver hides
// them, and following the TTL is what lets a DNS change move traffic in
// seconds without asking the resolver on every request.
type dnsSource struct {
	server string
	client *dns.Client
	host   string // dns: the name; dns_srv: the SRV name
	port   string // dns only
	srv    bool
}

func (u *Upstream) startDNS() error {
	src := &dnsSource{server: u.Cfg.DNSServer, client: &dns.Client{Timeout: dnsQueryTimeout}}
	if u.Cfg.DNSSRV != "" {
		src.host, src.srv = u.Cfg.DNSSRV, true
	} else {
		host, port, err := net.SplitHostPort(u.Cfg.DNS)
		if err != nil {
			return fmt.Errorf("dns %q: %w", u.Cfg.DNS, err)
		}
		src.host, src.port = host, port
		if _, err := netip.ParseAddr(host); err == nil {
			// An address needs no resolving.
			u.setEndpoints([]endpointSpec{{Addr: u.Cfg.DNS}})
			return nil
		}
	}
	if src.server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			return fmt.Errorf("dns: no dns_server given and none in /etc/resolv.conf: %w", err)
		}
		src.server = net.JoinHostPort(conf.Servers[0], conf.Port)
	}
	lo, hi := routes.DefaultDNSRefreshMin, routes.DefaultDNSRefreshMax
	if b := u.Cfg.DNSRefresh; b != nil && b.Min > 0 && b.Max >= b.Min {
		lo, hi = b.Min.D(), b.Max.D()
	}
	clamp := func(ttl time.Duration) time.Duration { return min(max(ttl, lo), hi) }

	// The first answer is awaited, so a new configuration starts with
	// endpoints; a failure leaves the set empty (503) and is retried soon.
	ctx, cancel := context.WithTimeout(u.ctx, 2*dnsQueryTimeout)
	specs, ttl, err := src.resolve(ctx)
	cancel()
	wait := lo
	if err == nil {
		u.setEndpoints(specs)
		wait = clamp(ttl)
	} else {
		u.log.Warn("upstream DNS resolution failed; retrying", "upstream", u.Name, "name", src.host, "error", err.Error())
	}
	u.goBackground("dns", func(ctx context.Context) {
		t := time.NewTimer(wait)
		defer t.Stop()
		failWait := lo
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			specs, ttl, err := src.resolve(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// The last good answer stays: a resolver outage must not
				// empty the upstream. Retries back off up to the max.
				u.log.Warn("upstream DNS resolution failed; keeping the last answer", "upstream", u.Name, "name", src.host, "error", err.Error())
				t.Reset(failWait)
				failWait = min(2*failWait, hi)
				continue
			}
			failWait = lo
			u.setEndpoints(specs)
			t.Reset(clamp(ttl))
		}
	})
	return nil
}

// resolve returns the endpoints and the smallest TTL of the answers used.
func (s *dnsSource) resolve(ctx context.Context) ([]endpointSpec, time.Duration, error) {
	if !s.srv {
		ips, ttl, err := s.addrs(ctx, s.host, nil)
		if err != nil {
			return nil, 0, err
		}
		specs := make([]endpointSpec, 0, len(ips))
		for _, ip := range ips {
			specs = append(specs, endpointSpec{Addr: net.JoinHostPort(ip, s.port)})
		}
		return specs, ttl, nil
	}
	resp, err := s.exchange(ctx, s.host, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	ttl := time.Duration(-1)
	var srvs []*dns.SRV
	best := uint16(65535)
	for _, rr := range resp.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			srvs = append(srvs, srv)
			best = min(best, srv.Priority)
			ttl = minTTL(ttl, rr.Header().Ttl)
		}
	}
	if len(srvs) == 0 {
		return nil, 0, fmt.Errorf("SRV %s: no records", s.host)
	}
	var specs []endpointSpec
	for _, srv := range srvs {
		if srv.Priority != best {
			continue // lower-priority targets are for when all of these are gone
		}
		ips, t, err := s.addrs(ctx, srv.Target, resp.Extra)
		if err != nil {
			return nil, 0, err
		}
		ttl = min(ttl, t)
		w := min(max(int(srv.Weight), 1), maxSRVWeight)
		for _, ip := range ips {
			specs = append(specs, endpointSpec{Addr: net.JoinHostPort(ip, strconv.Itoa(int(srv.Port))), Weight: w})
		}
	}
	return specs, ttl, nil
}

// addrs resolves name to its A and AAAA addresses, from extra (an SRV
// answer's additional section) when it holds them.
func (s *dnsSource) addrs(ctx context.Context, name string, extra []dns.RR) ([]string, time.Duration, error) {
	fq := dns.Fqdn(name)
	ttl := time.Duration(-1)
	var ips []string
	collect := func(rrs []dns.RR) {
		for _, rr := range rrs {
			if !strings.EqualFold(rr.Header().Name, fq) && len(extra) > 0 {
				continue
			}
			switch a := rr.(type) {
			case *dns.A:
				ips = append(ips, a.A.String())
				ttl = minTTL(ttl, rr.Header().Ttl)
			case *dns.AAAA:
				ips = append(ips, a.AAAA.String())
				ttl = minTTL(ttl, rr.Header().Ttl)
			}
		}
	}
	collect(extra)
	if len(ips) > 0 {
		return ips, max(ttl, 0), nil
	}
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := s.exchange(ctx, fq, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		saved := extra
		extra = nil // answers to our own question may name the CNAME chain
		collect(resp.Answer)
		extra = saved
	}
	if len(ips) == 0 {
		if len(errs) > 0 {
			return nil, 0, errors.Join(errs...)
		}
		return nil, 0, fmt.Errorf("%s: no A or AAAA records", name)
	}
	return ips, max(ttl, 0), nil
}

func (s *dnsSource) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	resp, _, err := s.client.ExchangeContext(ctx, m, s.server)
	if err != nil {
		return nil, fmt.Errorf("dns %s %s via %s: %w", dns.TypeToString[qtype], name, s.server, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("dns %s %s via %s: %s", dns.TypeToString[qtype], name, s.server, dns.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

func minTTL(cur time.Duration, ttl uint32) time.Duration {
	d := time.Duration(ttl) * time.Second
	if cur < 0 || d < cur {
		return d
	}
	return cur
}

// startFile takes the endpoints from endpoints_file and follows its
// changes. A file that cannot be read or parsed refuses the configuration
// at load; later, a bad version is logged and the last good set stays.
func (u *Upstream) startFile() error {
	path := u.Cfg.EndpointsFile
	specs, err := ReadEndpointsFile(path)
	if err != nil {
		return err
	}
	u.setEndpoints(specs)
	err = filewatch.File(u.ctx, u.ctx, &u.wg, path, 50*time.Millisecond, u.log, func() {
		specs, err := ReadEndpointsFile(path)
		if err != nil {
			u.log.Error("endpoints file refused; the last good set stays", "upstream", u.Name, "error", err.Error())
			return
		}
		u.setEndpoints(specs)
	})
	if err != nil {
		return fmt.Errorf("endpoints_file %s: watching: %w", path, err)
	}
	return nil
}

// ReadEndpointsFile reads lines of "host:port [weight]"; # starts a comment.
func ReadEndpointsFile(path string) ([]endpointSpec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("endpoints_file: %w", err)
	}
	defer f.Close()
	var specs []endpointSpec
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) > 2 {
			return nil, fmt.Errorf("endpoints_file %s:%d: want \"host:port [weight]\"", path, line)
		}
		host, port, err := net.SplitHostPort(fields[0])
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("endpoints_file %s:%d: %q is not host:port", path, line, fields[0])
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("endpoints_file %s:%d: %q is listed twice", path, line, fields[0])
		}
		seen[fields[0]] = true
		s := endpointSpec{Addr: fields[0], Weight: 1}
		if len(fields) == 2 {
			w, err := strconv.Atoi(fields[1])
			if err != nil || w < 1 || w > 1000 {
				return nil, fmt.Errorf("endpoints_file %s:%d: weight %q is not between 1 and 1000", path, line, fields[1])
			}
			s.Weight = w
		}
		specs = append(specs, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("endpoints_file %s: %w", path, err)
	}
	return specs, nil
}
