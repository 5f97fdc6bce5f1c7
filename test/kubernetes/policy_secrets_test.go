package kubernetes_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// Hostile Secrets of API keys, each named by its own rule's policy,
// through the real API server and edge: the edge accepts what it can
// serve correctly and refuses the rest cleanly (Invalid, the Secret named,
// no value in the message, the rule failing closed), and never lets a key
// that no client could have been given, an empty or a binary one, or a
// near-miss of a real one, through to the upstream.
func TestCausewayPolicyHostileSecrets(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+63))

	const ns, host = "hostile-secrets", "hostile.example"
	plainGateway(t, c, ns, pod{"hostile-1", testnetns.Addr(256 + 63)})

	// Nearly the API server's 1 MiB: 14000 clients with 64-byte keys.
	big := map[string][]byte{}
	for i := range 14000 {
		big[fmt.Sprintf("client-%05d", i)] = fmt.Appendf(nil, "%064d", i)
	}
	const dupKey = "the-same-key-for-two-clients-0123456789"
	cases := []struct {
		name string
		data map[string][]byte
		// invalid is a piece of the Invalid message, "" for Accepted.
		invalid string
		// serve are keys and the client name the upstream must see.
		serve map[string]string
		// refuse are keys (header values) that must get 401.
		refuse []string
	}{
		{name: "big", data: big,
			serve:  map[string]string{fmt.Sprintf("%064d", 0): "client-00000", fmt.Sprintf("%064d", 7777): "client-07777", fmt.Sprintf("%064d", 13999): "client-13999"},
			refuse: []string{fmt.Sprintf("%064d", 14000), fmt.Sprintf("%063d", 7777), fmt.Sprintf("%064d ", 1)[1:] + "x"}},
		// A trailing newline is dropped (a file's last line), so these are
		// one key for two clients: refused, naming neither the key nor
		// a line of it.
		{name: "dup", data: map[string][]byte{"alice": []byte(dupKey + "\n"), "bob": []byte(dupKey)}, invalid: "same hash"},
		// An empty key and a newline alone: no request carries an empty
		// key, so neither ever matches; the other client still works.
		{name: "empty", data: map[string][]byte{"carol": {}, "dan": []byte("\r\n"), "erin": []byte("erin-key-0123456789abcdef")},
			serve: map[string]string{"erin-key-0123456789abcdef": "erin"}, refuse: []string{"", " ", "Bearer ", "\t"}},
		// Bytes no header can carry: stored as a hash, never matched.
		{name: "binary", data: map[string][]byte{"frank": {0, 0xff, 0xfe, '\n', 0x7f}, "gina": []byte("gina-key-0123456789abcdef")},
			serve: map[string]string{"gina-key-0123456789abcdef": "gina"}, refuse: []string{"\x7f", "\xff\xfe"}},
	}
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	var rules []gatewayv1.HTTPRouteRule
	for _, tc := range cases {
		must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys-" + tc.name}, Type: corev1.SecretTypeOpaque,
			Data: tc.data}, metav1.CreateOptions{}))(t)
		must(policies.Create(ctx, policyJSON(t, ns, tc.name, `{
			"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "`+tc.name+`"}],
			"authenticators": [{"config": {"api_key": {"header": "X-Key", "forward_name": "X-Client"}}, "secrets": {"apiKeys": {"name": "keys-`+tc.name+`"}}}]}`), metav1.CreateOptions{}))(t)
		r := prefixRule("/"+tc.name, "web", "")
		r.Name = ptr(gatewayv1.SectionName(tc.name))
		rules = append(rules, r)
	}
	// Names the API server refuses outright: they would be lines of the
	// keys the edge builds ("a:b" a name with a colon, a newline a second
	// line).
	for _, name := range []string{"a:b", "a\nb", "a b", ""} {
		_, err := c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad-name"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{name: []byte("k")}}, metav1.CreateOptions{})
		if err == nil {
			t.Fatalf("the API server stored a Secret with the entry name %q", name)
		}
	}
	rt := httpRoute(ns, "api", rules...)
	rt.Spec.Hostnames = []gatewayv1.Hostname{host}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, rt, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	addr := e.Addr("http")
	for _, tc := range cases {
		eventually(t, tc.name+" judged", func() bool { return policyAccepted(t, c, ns, tc.name) != nil })
		a := policyAccepted(t, c, ns, tc.name)
		switch {
		case tc.invalid == "" && a.Reason != "Accepted":
			t.Errorf("%s: %s %q, want Accepted", tc.name, a.Reason, a.Message)
		case tc.invalid != "" && (a.Reason != "Invalid" || !strings.Contains(a.Message, tc.invalid) || !strings.Contains(a.Message, "keys-"+tc.name)):
			t.Errorf("%s: %s %q, want Invalid with %q naming the Secret", tc.name, a.Reason, a.Message, tc.invalid)
		}
		for _, v := range tc.data {
			if len(v) > 3 && strings.Contains(a.Message, strings.TrimSpace(string(v))) {
				t.Errorf("%s: the status shows a key: %q", tc.name, a.Message)
			}
		}
	}
	eventually(t, "the big Secret's keys are served", func() bool {
		code, body := sendWith(t, addr, host, "/big", map[string]string{"X-Key": fmt.Sprintf("%064d", 0)})
		return code == 200 && body == "ok client-00000"
	})
	before := backend.hits.Load()
	served := int64(0)
	for _, tc := range cases {
		if tc.invalid != "" {
			for _, v := range tc.data {
				if code, _ := sendWith(t, addr, host, "/"+tc.name, map[string]string{"X-Key": strings.TrimSpace(string(v))}); code != 500 {
					t.Errorf("%s: a rule whose policy is invalid answered %d", tc.name, code)
				}
			}
			continue
		}
		for key, client := range tc.serve {
			code, body := sendWith(t, addr, host, "/"+tc.name, map[string]string{"X-Key": key, "X-Client": "admin"})
			if code != 200 || body != "ok "+client {
				t.Errorf("%s: key of %s: %d %q", tc.name, client, code, body)
			}
			served++
		}
		for _, key := range tc.refuse {
			if code, body := sendRaw(t, addr, host, "/"+tc.name, key); code != 401 && code != 400 {
				t.Errorf("%s: key %q: %d %s, want 401 (or 400 for what HTTP cannot carry)", tc.name, key, code, body)
			}
		}
	}
	if got := backend.hits.Load() - before; got != served {
		t.Fatalf("the upstream was reached %d times for %d good keys", got, served)
	}
}

// sendRaw sends X-Key exactly as given, bytes an HTTP client library
// would refuse to send included, and returns the edge's answer.
func sendRaw(t *testing.T, addr, host, path, key string) (int, string) {
	t.Helper()
	conn := must(net.DialTimeout("tcp", addr, 5*time.Second))(t)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nX-Key: "+key+"\r\nX-Client: admin\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
