// Package standard links Causeway's built-in plugins into a binary: import
// it for its side effects. The causeway command imports it, so every build
// (including those of `causeway build`) has the built-ins.
package standard

import (
	_ "github.com/causewayhq/causeway/plugins/bodylimit"
	_ "github.com/causewayhq/causeway/plugins/cache"
	_ "github.com/causewayhq/causeway/plugins/compress"
	_ "github.com/causewayhq/causeway/plugins/cors"
	_ "github.com/causewayhq/causeway/plugins/headers"
	_ "github.com/causewayhq/causeway/plugins/ipfilter"
	_ "github.com/causewayhq/causeway/plugins/requestid"
	_ "github.com/causewayhq/causeway/plugins/respond"
	_ "github.com/causewayhq/causeway/plugins/rewrite"
)

// Names are the built-in plugins, as routes files name them after use:.
var Names = []string{"body_limit", "cache", "compress", "cors", "headers", "ip_filter", "request_id", "respond", "rewrite"}
