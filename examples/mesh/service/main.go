// Command service is the mesh example's demo service: it answers with who
// called it (the sidecar's X-Causeway-Peer-Id) and, with -call, first calls
// another service through its own sidecar's outbound listener.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	name := flag.String("name", "service", "name to answer with")
	addr := flag.String("listen", "127.0.0.1:17001", "listen address")
	call := flag.String("call", "", "host of a service to call through the sidecar (e.g. payments)")
	outbound := flag.String("outbound", "127.0.0.1:15001", "this service's sidecar outbound listener")
	flag.Parse()

	client := &http.Client{Timeout: 10 * time.Second}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply := map[string]any{"service": *name, "path": r.URL.Path, "caller": r.Header.Get("X-Causeway-Peer-Id")}
		if *call != "" {
			req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+*outbound+r.URL.Path, nil)
			req.Host = *call
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, "calling "+*call+": "+err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			var downstream any
			body, _ := io.ReadAll(resp.Body)
			if json.Unmarshal(body, &downstream) != nil {
				downstream = string(body)
			}
			reply["downstream"] = downstream
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply)
	})
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
