// Package store keeps invocation records, their outputs and package blobs
// in a certmagic.Storage: Caddy's configured storage, the file system by
// default, or a shared backend such as Redis when several nodes serve one
// API.
//
// Keys, all under the prefix "lualambda/":
//
//	invocations/<id>.json   the record: state, profile, packages, timings (never args)
//	outputs/<id>.json       the retained output, deleted when retention ends
//	blobs/<sha256>.zip      package zips, by content; reaped when no record uses them
//	claims/<id>             the storage lock taken while an id is claimed
//
// Claiming an id takes the storage's lock for it, so two requests for the
// same id on any number of nodes give one run.
package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/lualambda/caddy-lualambda/payhook"
)

// Prefix is the root of every key the store writes.
const Prefix = "lualambda/"

// States of an invocation.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateExpired = "expired"
)

// ErrExists is returned by Claim when the id is already used.
var ErrExists = errors.New("invocation id already used")

// ErrNotFound is returned for an id the store does not know.
var ErrNotFound = errors.New("invocation not found")

// ErrExpired is returned for output whose retention has ended.
var ErrExpired = errors.New("invocation output expired")

// PackageRef names a package by its content hash.
type PackageRef struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// Record is what the store keeps about an invocation. It never holds the
// arguments or the result, so it can be shown to anyone who knows the id.
type Record struct {
	ID       string       `json:"id"`
	State    string       `json:"state"`
	Reason   string       `json:"reason,omitempty"`
	Profile  string       `json:"profile"`
	Packages []PackageRef `json:"packages"`
	Require  string       `json:"require,omitempty"`
	ArgsHash string       `json:"args_hash"`
	// Node is the server that ran it.
	Node      string     `json:"node,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	Finished  *time.Time `json:"finished_at,omitempty"`
	// Deadline is when a running invocation must have finished; past it a
	// record still running was lost with its node.
	Deadline time.Time `json:"deadline"`
	// Retention is how long the output is kept after the run.
	Retention time.Duration `json:"retention_ns"`
	ExpiresAt *time.Time    `json:"expires_at,omitempty"`
	// TokenHash is the SHA-256 of the capability token, in hex.
	TokenHash string `json:"token_hash"`
	Paid      bool   `json:"paid,omitempty"`
	// Session marks an interactive session rather than a one-shot run.
	Session bool `json:"session,omitempty"`
}

// Receipt records a settled payment.
type Receipt = payhook.Receipt

// Output is a finished invocation's retained output.
type Output struct {
	ID        string          `json:"id"`
	Profile   string          `json:"profile"`
	Reason    string          `json:"reason"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Traceback string          `json:"traceback,omitempty"`
	Stdout    string          `json:"stdout"`
	Stderr    string          `json:"stderr"`
	Timings   Timings         `json:"timings"`
	Receipt   *Receipt        `json:"receipt,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// Timings of a run, in milliseconds.
type Timings struct {
	QueueMillis float64 `json:"queue_ms"`
	VMMillis    float64 `json:"vm_ms"`
	LuaMillis   float64 `json:"lua_ms"`
	TotalMillis float64 `json:"total_ms"`
}

// Store reads and writes invocation state in a certmagic.Storage.
type Store struct {
	s   certmagic.Storage
	now func() time.Time
}

// New returns a Store over s.
func New(s certmagic.Storage) *Store { return &Store{s: s, now: time.Now} }

func recordKey(id string) string { return Prefix + "invocations/" + id + ".json" }
func outputKey(id string) string { return Prefix + "outputs/" + id + ".json" }
func blobKey(hash string) string { return Prefix + "blobs/" + hash + ".zip" }
func claimLock(id string) string { return Prefix + "claims/" + id }

// HashToken returns the hex SHA-256 of a capability token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokenMatches compares a presented token with a record's hash in constant time.
func (r *Record) TokenMatches(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(r.TokenHash)) == 1
}

// Claim stores rec as a new running invocation, unless its id is already
// used (ErrExists, with the existing record). The check and the write happen
// under the storage's lock for the id.
func (st *Store) Claim(ctx context.Context, rec *Record) (*Record, error) {
	lock := claimLock(rec.ID)
	if err := st.s.Lock(ctx, lock); err != nil {
		return nil, fmt.Errorf("lock id %s: %w", rec.ID, err)
	}
	defer func() { _ = st.s.Unlock(context.WithoutCancel(ctx), lock) }()
	existing, err := st.Get(ctx, rec.ID)
	switch {
	case err == nil:
		return existing, ErrExists
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	if err := st.putJSON(ctx, recordKey(rec.ID), rec); err != nil {
		return nil, err
	}
	return nil, nil
}

// Release forgets a claimed invocation that never ran (no VM could be had),
// so that its id can be used again.
func (st *Store) Release(ctx context.Context, id string) error {
	if err := st.s.Delete(ctx, recordKey(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}

// Finish stores a run's output and marks its record done.
func (st *Store) Finish(ctx context.Context, rec *Record, out *Output) error {
	now := st.now()
	exp := now.Add(rec.Retention)
	rec.State = StateDone
	rec.Reason = out.Reason
	rec.Finished = &now
	rec.ExpiresAt = &exp
	out.ExpiresAt = exp
	if err := st.putJSON(ctx, outputKey(rec.ID), out); err != nil {
		return err
	}
	return st.putJSON(ctx, recordKey(rec.ID), rec)
}

// AddReceipt attaches a settled payment's receipt to an invocation.
func (st *Store) AddReceipt(ctx context.Context, id string, rc Receipt) error {
	rec, err := st.Get(ctx, id)
	if err != nil {
		return err
	}
	rec.Paid = true
	if err := st.putJSON(ctx, recordKey(id), rec); err != nil {
		return err
	}
	var out Output
	if err := st.getJSON(ctx, outputKey(id), &out); err != nil {
		return err
	}
	out.Receipt = &rc
	return st.putJSON(ctx, outputKey(id), &out)
}

// Get returns the record for id, bringing its state up to date: a record
// past its retention reads as expired, and one still running past its
// deadline (its node died) reads as done with reason "lost".
func (st *Store) Get(ctx context.Context, id string) (*Record, error) {
	var rec Record
	if err := st.getJSON(ctx, recordKey(id), &rec); err != nil {
		return nil, err
	}
	now := st.now()
	switch {
	case rec.State == StateDone && rec.ExpiresAt != nil && now.After(*rec.ExpiresAt):
		rec.State = StateExpired
	case rec.State == StateRunning && now.After(rec.Deadline):
		rec.State = StateDone
		rec.Reason = "lost"
		exp := rec.Deadline.Add(rec.Retention)
		rec.Finished, rec.ExpiresAt = &rec.Deadline, &exp
		if now.After(exp) {
			rec.State = StateExpired
		}
	}
	return &rec, nil
}

// Output returns the retained output of a finished invocation. It returns
// ErrExpired after retention and ErrNotFound when the run left none (lost).
func (st *Store) Output(ctx context.Context, rec *Record) (*Output, error) {
	if rec.State == StateExpired {
		return nil, ErrExpired
	}
	var out Output
	if err := st.getJSON(ctx, outputKey(rec.ID), &out); err != nil {
		return nil, err
	}
	if st.now().After(out.ExpiresAt) {
		return nil, ErrExpired
	}
	return &out, nil
}

// PutBlob stores a package zip by content and returns its hash.
func (st *Store) PutBlob(ctx context.Context, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	if st.s.Exists(ctx, blobKey(hash)) {
		return hash, nil
	}
	if err := st.s.Store(ctx, blobKey(hash), data); err != nil {
		return "", fmt.Errorf("store package blob: %w", err)
	}
	return hash, nil
}

// Blob loads a package zip by hash, checking its content.
func (st *Store) Blob(ctx context.Context, hash string) ([]byte, error) {
	data, err := st.s.Load(ctx, blobKey(hash))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("load package blob: %w", err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != hash {
		return nil, fmt.Errorf("package blob %s is corrupt", hash)
	}
	return data, nil
}

// tombstone is how long an expired record is kept, so its id keeps
// answering 410 rather than 404 and cannot be paid for again.
const tombstone = 7 * 24 * time.Hour

// blobGrace protects blobs just uploaded for a run whose record is not
// written yet from the reaper.
const blobGrace = time.Hour

// Reap deletes expired outputs, records older than their tombstone period,
// and blobs no remaining record refers to. It returns how many keys it deleted.
func (st *Store) Reap(ctx context.Context) (int, error) {
	now := st.now()
	keys, err := st.s.List(ctx, Prefix+"invocations", false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("list invocations: %w", err)
	}
	deleted := 0
	used := map[string]bool{}
	for _, k := range keys {
		id := strings.TrimSuffix(path.Base(k), ".json")
		rec, err := st.Get(ctx, id)
		if err != nil {
			continue
		}
		if rec.ExpiresAt != nil && now.After(*rec.ExpiresAt) {
			if err := st.s.Delete(ctx, outputKey(id)); err == nil {
				deleted++
			}
			if now.After(rec.ExpiresAt.Add(tombstone)) {
				if err := st.s.Delete(ctx, recordKey(id)); err == nil {
					deleted++
				}
				continue
			}
		}
		if rec.State != StateExpired {
			for _, p := range rec.Packages {
				used[p.Hash] = true
			}
		}
	}
	blobs, err := st.s.List(ctx, Prefix+"blobs", false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return deleted, fmt.Errorf("list blobs: %w", err)
	}
	for _, k := range blobs {
		hash := strings.TrimSuffix(path.Base(k), ".zip")
		if used[hash] {
			continue
		}
		info, err := st.s.Stat(ctx, k)
		if err != nil || now.Sub(info.Modified) < blobGrace {
			continue
		}
		if err := st.s.Delete(ctx, k); err == nil {
			deleted++
		}
	}
	return deleted, nil
}

func (st *Store) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := st.s.Store(ctx, key, b); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

func (st *Store) getJSON(ctx context.Context, key string, v any) error {
	b, err := st.s.Load(ctx, key)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return fmt.Errorf("load %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}
