package caddylualambda

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/lualambda/caddy-lualambda/store"
)

// stores holds one store.Store per storage in this process, so that every
// handler over the same storage (a lualambda and a lualambda_mcp, or the
// handlers of the old and the new config during a reload) reads the writes
// the others left pending (see store's later.go).
var stores = caddy.NewUsagePool()

// storeDrainTimeout bounds how long the last user of a store waits for its
// pending writes when it lets go.
const storeDrainTimeout = 30 * time.Second

// sharedStore is a pooled store and the pool key it is held under.
type sharedStore struct {
	*store.Store
}

// Destruct implements caddy.Destructor: it waits, within a bound, for the
// writes the store left for after its answers.
func (s sharedStore) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), storeDrainTimeout)
	defer cancel()
	return s.Wait(ctx)
}

// storeKey names a storage and a write mode in the pool: the storage's kind
// and what it says it is.
func storeKey(s certmagic.Storage, deferred bool) string {
	if named, ok := s.(fmt.Stringer); ok {
		return fmt.Sprintf("%T %s deferred=%t", s, named.String(), deferred)
	}
	return fmt.Sprintf("%T %p deferred=%t", s, s, deferred)
}

// Values of Handler.StoreWrites.
const (
	storeWritesAuto   = "auto"
	storeWritesAfter  = "after_answer"
	storeWritesBefore = "before_answer"
)

// deferWrites reports whether a handler's store writes what can wait after
// the answer: with store_writes auto, only on the local file system, where
// every write costs a sync and one node is the usual case.
func deferWrites(mode string, s certmagic.Storage) (bool, error) {
	switch mode {
	case "", storeWritesAuto:
		_, local := s.(*certmagic.FileStorage)
		return local, nil
	case storeWritesAfter:
		return true, nil
	case storeWritesBefore:
		return false, nil
	}
	return false, fmt.Errorf("store_writes %q: want auto, after_answer or before_answer", mode)
}

// loadStore returns the process's store for s and its pool key; the caller
// lets go with releaseStore.
func loadStore(s certmagic.Storage, deferred bool, logger *zap.Logger) (*store.Store, string, error) {
	key := storeKey(s, deferred)
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		st := store.New(s)
		st.DeferWrites(deferred)
		st.SetErrorLog(func(err error) { logger.Error("storing an invocation after its answer", zap.Error(err)) })
		return sharedStore{Store: st}, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("load the invocation store: %w", err)
	}
	return val.(sharedStore).Store, key, nil
}

// releaseStore lets go of a store from loadStore.
func releaseStore(key string, logger *zap.Logger) {
	if key == "" {
		return
	}
	if _, err := stores.Delete(key); err != nil {
		logger.Error("writing the invocations left pending", zap.Error(err))
	}
}
