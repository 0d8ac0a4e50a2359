package scrape

import (
	"context"
	"time"

	"github.com/grafana/dskit/services"

	"github.com/meridianhq/meridian/inventory"
)

// RemapGap is the shortest time between two reads triggered by inventory changes: a
// fleet that churns does not turn into a scrape storm.
const RemapGap = time.Second

// Service calls iteration every interval and also soon after each inventory change (at
// most once per RemapGap), so that sources are read again and mapped to the new snapshot
// within seconds rather than at the next interval. stopping may be nil.
func Service(interval time.Duration, inv inventory.View, iteration func(context.Context) error, stopping func(error) error) services.Service {
	return services.NewBasicService(nil, func(ctx context.Context) error {
		changes, cancel := inv.Subscribe()
		defer cancel()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var last time.Time
		var gap <-chan time.Time // set while a change waits for RemapGap to pass
		run := func() error {
			last = time.Now()
			return iteration(ctx)
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				gap = nil
				if err := run(); err != nil {
					return err
				}
			case <-changes:
				if wait := RemapGap - time.Since(last); wait > 0 {
					if gap == nil {
						gap = time.After(wait)
					}
					continue
				}
				if err := run(); err != nil {
					return err
				}
			case <-gap:
				gap = nil
				if err := run(); err != nil {
					return err
				}
			}
		}
	}, stopping)
}
