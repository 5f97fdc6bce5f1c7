package conformance

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testk8s"
	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/gateway-api/apis/v1alpha3"
	"sigs.k8s.io/gateway-api/apis/v1beta1"
	conformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
)

var cp *testk8s.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(testnetns.Main(func() int {
		return testk8s.StartMain(m, &cp, func(c *testk8s.ControlPlane) error {
			return c.InstallGatewayAPI()
		})
	}))
}

// TestGatewayAPIConformance runs the Gateway API conformance suite's
// GATEWAY-HTTP profile against an edge on a real API server. The report
// goes to $CONFORMANCE_REPORT when it is set.
func TestGatewayAPIConformance(t *testing.T) {
	dir := t.TempDir()
	echo := filepath.Join(dir, "echo-basic")
	if out, err := exec.Command("go", "build", "-o", echo, "sigs.k8s.io/gateway-api/conformance/echo-basic").CombinedOutput(); err != nil {
		t.Fatalf("building echo-basic: %v\n%s", err, out)
	}
	kubeconfig, err := cp.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := clientset.NewForConfigOrDie(rc)

	ctx, cancel := context.WithCancel(context.Background())
	runnerLog := io.Writer(&testutil.Buffer{})
	if f := os.Getenv("CONFORMANCE_RUNNER_LOG"); f != "" {
		lf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer lf.Close()
		runnerLog = lf
	}
	runner := newPodRunner(cs, echo, dir, slog.New(slog.NewTextHandler(runnerLog, nil)))
	runnerDone := make(chan struct{})
	go func() { defer close(runnerDone); runner.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runnerDone
	})

	edgeLog := io.Writer(&testutil.Buffer{})
	if f := os.Getenv("CONFORMANCE_EDGE_LOG"); f != "" {
		lf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer lf.Close()
		edgeLog = lf
	}
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	c, err := client.New(rc, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []func(*runtime.Scheme) error{gatewayv1.Install, v1beta1.Install, v1alpha2.Install, v1alpha3.Install, apiextensionsv1.AddToScheme} {
		if err := install(c.Scheme()); err != nil {
			t.Fatal(err)
		}
	}
	// One edge per Gateway, each with its own address, as
	// docs/kubernetes.md describes: a route attached to one Gateway is
	// then served on that Gateway's address only.
	edges := newGatewayEdges(c, "causeway", kubeconfig, dir, edgeLog)
	edgesDone := make(chan struct{})
	go func() { defer close(edgesDone); edges.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-edgesDone
		for _, err := range edges.errors() {
			t.Error(err)
		}
	})
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "causeway"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}
	if err := c.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	// The suite reads the features to test from the class's status, so
	// the edge must have written it first.
	for deadline := time.Now().Add(time.Minute); len(class.Status.SupportedFeatures) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the edge did not list its features in the GatewayClass's status: %+v", class.Status)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(class), class); err != nil {
			t.Fatal(err)
		}
	}

	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:     "causeway",
			ConformanceProfiles:  []suite.ConformanceProfileName{suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName},
			CleanupBaseResources: false,
			CleanupTestResources: true,
			DisableParallelTests: true,
			TimeoutConfig:        config.DefaultTimeoutConfig(),
			Mode:                 "default",
			ReportOutputPath:     os.Getenv("CONFORMANCE_REPORT"),
			SkipTests:            skipped,
			Implementation: confv1.Implementation{
				Organization: "causewayhq", Project: "causeway", URL: "https://github.com/causewayhq/causeway",
				Version: "main", Contact: []string{"https://github.com/causewayhq/causeway/issues"},
			},
		},
		Client:     c,
		Clientset:  cs,
		RestConfig: rc,
		ManifestFS: []fs.FS{&conformance.Manifests},
	}
	// The features to test are the ones the edge lists in its
	// GatewayClass's status, as the suite reads them there; a single test
	// (CONFORMANCE_RUN) turns that off, so they are named.
	if only := os.Getenv("CONFORMANCE_RUN"); only != "" {
		opts.RunTest = only
		opts.SupportedFeatures = kubernetes.SupportedFeatures()
	}
	conformance.RunConformanceWithOptions(t, opts)
}

// skipped are the suite's tests of the claimed features that this edge
// does not pass, each with why; docs/kubernetes.md lists them too. None
// today: HTTPRouteMultipleGateways, skipped while every Gateway shared one
// edge's address, passes with an edge per Gateway.
var skipped []string
