// Package conformance runs the Gateway API conformance suite against the
// edge, on a real etcd and kube-apiserver, with a stand-in for the kubelet
// and the Deployment and EndpointSlice controllers (see podrunner.go).
//
// It is a module of its own so that the suite's dependencies
// (controller-runtime, testify, the suite's echo backend) never reach the
// edge's binary or its go.mod.
package conformance
