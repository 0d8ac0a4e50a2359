package storage

import (
	"context"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/grafana/dskit/services"
)

// Service runs the store as a dskit service: starting applies the migrations, stopping
// closes the driver. Against a server, starting retries (with backoff, logging each
// failure) until the server answers or the service is stopped, so Meridian can start
// before ClickHouse does; the pipeline's spool holds records meanwhile. On the embedded
// engine a failed migration is final.
func (s *Store) Service() services.Service {
	return services.NewIdleService(s.migrateWithRetry, func(error) error { return s.Close() })
}

func (s *Store) migrateWithRetry(ctx context.Context) error {
	if _, embedded := s.drv.(*embedded); embedded {
		return s.Migrate(ctx)
	}
	b := backoff.New(ctx, backoff.Config{MinBackoff: time.Second, MaxBackoff: 30 * time.Second})
	for {
		err := s.Migrate(ctx)
		if err == nil {
			return nil
		}
		s.log.Warn("storage: migrations not applied yet; retrying", "err", err, "retry_in", b.NextDelay())
		b.Wait()
		if !b.Ongoing() {
			return err
		}
	}
}
