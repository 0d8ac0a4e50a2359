package alerts_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/pipeline"
)

// TestRecorder: the records of an alert's life as the ruler's loop sees it every 30 s —
// firing once when it starts, restated every KeyframeEvery while it fires, resolved once;
// an unchanged set between keyframes writes nothing; a change the pipeline refuses goes
// with the next tick's.
func TestRecorder(t *testing.T) {
	var got []string
	refuse := 1 // the pipeline pushes back at the first change: it is appended with the next tick's
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		if refuse--; refuse == 0 {
			return errors.New("spool full")
		}
		for _, r := range recs {
			a := r.(*pipeline.AlertState)
			got = append(got, fmt.Sprintf("%s %s %s %s key=%v", a.M.Time.Format("15:04:05"), a.Name, a.Labels["pop"], a.State, a.Keyframe))
		}
		return nil
	})
	rec := alerts.NewRecorder(app, "ruler")
	t0 := time.Now().Truncate(time.Hour)
	page := alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "lon", "slo": "availability"}, ActiveAt: t0}
	ticket := alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityTicket, Labels: map[string]string{"pop": "par", "slo": "availability"}, ActiveAt: t0}
	for i := range 30 { // 15 minutes
		now := t0.Add(time.Duration(i) * 30 * time.Second)
		var firing []alerts.Alert
		if i >= 2 && i < 22 { // 01:00 to 11:00
			firing = append(firing, page)
		}
		if i == 4 { // one tick only
			firing = append(firing, ticket)
		}
		if err := rec.Observe(context.Background(), now, firing); err != nil && i != 2 {
			t.Fatalf("tick %d: %v", i, err)
		}
	}
	at := func(d time.Duration) string { return t0.Add(d).Format("15:04:05") }
	want := []string{
		at(time.Minute) + " MeridianPOPAvailability lon firing key=false",
		at(2*time.Minute) + " MeridianPOPAvailability par firing key=false",
		at(150*time.Second) + " MeridianPOPAvailability par resolved key=false",
		at(5*time.Minute) + " MeridianPOPAvailability lon firing key=true",
		at(10*time.Minute) + " MeridianPOPAvailability lon firing key=true",
		at(11*time.Minute) + " MeridianPOPAvailability lon resolved key=false",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
