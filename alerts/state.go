// Package alerts turns SLO specs into Prometheus rules, evaluates them over the SLI
// series Meridian collects, and sends firing alerts to Alertmanager.
package alerts

import "time"

// Severities of SLO alerts, as in the SRE workbook's multi-window multi-burn-rate scheme.
const (
	SeverityPage   = "page"
	SeverityTicket = "ticket"
)

// Alert is a firing SLO alert as steering and the live map see it. Labels carry the
// SLI's identity: slo, service, and pop or site where the SLO is per POP or per site.
type Alert struct {
	Name     string
	Severity string
	Labels   map[string]string
	ActiveAt time.Time
}

// Source gives the alerts firing now. Steering and the map poll it on their own tick.
type Source interface {
	Firing() []Alert
}

// AnnotationCause is the annotation a notification carries naming the top probable cause
// beneath what the alert points at, with its evidence (see Explainer).
const AnnotationCause = "meridian_cause"

// Explainer names the probable cause of what an alert's labels point at (a POP, a
// workload, a client region): the live map's causes. The ruler asks it for every firing
// alert it notifies.
type Explainer interface {
	// Cause is the top cause with its evidence, or "" when none is known.
	Cause(labels map[string]string) string
}
