package storage

import "errors"

func openServer(cfg Config, sc schema) (driver, error) {
	return nil, errors.New("storage: server driver not built yet")
}
