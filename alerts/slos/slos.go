// Package slos holds the SLO specs Meridian ships (Sloth prometheus/v1 YAML), embedded so
// that the lab finds them from any working directory.
package slos

import "embed"

// FS holds the *.yaml specs of this directory.
//
//go:embed *.yaml
var FS embed.FS
