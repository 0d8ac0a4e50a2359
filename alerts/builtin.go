package alerts

import "embed"

// Builtin holds Meridian's own rule files (builtin/*.yml): the Ceph health rules and the
// collector and pipeline self-alerts, which the ruler evaluates besides the SLO rules
// unless ruler.builtin_rules is off.
//
//go:embed builtin/*.yml
var Builtin embed.FS
