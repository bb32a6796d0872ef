// Package redisstorage is the Caddy storage module caddy.storage.redis: a
// certmagic.Storage (with Locker and TryLocker) kept in a Redis server
// through github.com/redis/go-redis/v9, so that several Caddy nodes share
// certificates and the lualambda store.
//
// Layout, under the configured key prefix P:
//
//	P:d:<key>      a hash per stored key: v (the value), m (modified, Unix ms, from the server's clock)
//	P:idx          a sorted set of every stored key (all scores 0), ordered by bytes
//	P:lock:<name>  a lock: a random token per holder, with a TTL renewed while held
//
// Every write changes the value and the index in one Lua script, so the
// index never disagrees with the data. List reads a lexical range of the
// index (ZRANGEBYLEX), so its cost follows what is listed, not what is
// stored. Directories are implied by keys, as in certmagic's FileStorage.
package redisstorage

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(Storage))
}

// Defaults.
const (
	DefaultHost      = "127.0.0.1"
	DefaultPort      = "6379"
	DefaultKeyPrefix = "caddy"
	DefaultTimeout   = 5 * time.Second
	DefaultLockTTL   = 10 * time.Second
)

// Storage is the caddy.storage.redis module. Its options follow the
// ecosystem's caddy-storage-redis module where they apply, so that
// configurations carry over; string options accept placeholders such as
// {env.REDIS_PASSWORD} and {file./run/secrets/redis}.
type Storage struct {
	// ClientType is "simple" (the default and only type supported).
	ClientType string `json:"client_type,omitempty"`
	// Address lists host:port addresses; when set it overrides Host and Port.
	Address []string `json:"address,omitempty"`
	// Host and Port form the address when Address is not set.
	Host []string `json:"host,omitempty"`
	Port []string `json:"port,omitempty"`
	// DB is the Redis database number.
	DB int `json:"db,omitempty"`
	// Timeout bounds dialing, reads and writes: a number of seconds or a Go duration ("5", "1500ms").
	Timeout string `json:"timeout,omitempty"`
	// Username and Password authenticate to Redis (ACL or requirepass).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// KeyPrefix is the prefix of every Redis key written ("caddy" by default).
	KeyPrefix string `json:"key_prefix,omitempty"`
	// ClientName names the connection in CLIENT LIST.
	ClientName string `json:"client_name,omitempty"`
	// TLSEnabled connects over TLS; TLSInsecure skips verifying the server's certificate.
	TLSEnabled  bool `json:"tls_enabled,omitempty"`
	TLSInsecure bool `json:"tls_insecure,omitempty"`
	// TLSServerCertsPEM and TLSServerCertsPath add PEM certificates to trust for the server.
	TLSServerCertsPEM  string `json:"tls_server_certs_pem,omitempty"`
	TLSServerCertsPath string `json:"tls_server_certs_path,omitempty"`
	// EncryptionKey and Compression exist in caddy-storage-redis; this
	// module refuses them rather than ignore them.
	EncryptionKey string `json:"encryption_key,omitempty"`
	Compression   any    `json:"compression,omitempty"`
	// LockTTL is how long a lock outlives its holder (renewed every third
	// of it while held); a Go duration, 10s by default.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

	client  *redis.Client
	prefix  string
	lockTTL time.Duration
	logger  *zap.Logger

	held *heldLocks
}

// heldLocks are the locks this process holds, by name.
type heldLocks struct {
	mu        sync.Mutex
	locks     map[string]*heldLock
	closing   bool // Cleanup was called: close the client when the last lock goes
	closeOnce sync.Once
}

// heldLock is a lock this process holds, with its renewal goroutine.
type heldLock struct {
	token    string
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// halt stops the renewal and waits for it to end.
func (l *heldLock) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}

// CaddyModule returns the Caddy module information.
func (*Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.redis",
		New: func() caddy.Module { return new(Storage) },
	}
}

// Provision checks the configuration, replaces placeholders and connects.
func (s *Storage) Provision(ctx caddy.Context) error {
	return s.setup(ctx.Logger())
}

// Open returns a provisioned Storage for the given configuration outside
// Caddy (tools and tests); logger may be nil. Close it when done.
func Open(cfg *Storage, logger *zap.Logger) (*Storage, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if err := cfg.setup(logger); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (s *Storage) setup(logger *zap.Logger) error {
	s.logger = logger
	s.held = &heldLocks{locks: map[string]*heldLock{}}
	repl := caddy.NewReplacer()
	r := func(v string) string { return repl.ReplaceKnown(v, "") }
	switch strings.ToLower(r(s.ClientType)) {
	case "", "simple":
	default:
		return fmt.Errorf("redis storage: client_type %q is not supported (only simple)", s.ClientType)
	}
	if s.EncryptionKey != "" {
		return errors.New("redis storage: encryption_key is not supported by this module")
	}
	switch c := s.Compression.(type) {
	case nil, bool:
		if c == true {
			return errors.New("redis storage: compression is not supported by this module")
		}
	case string:
		if v := strings.ToLower(r(c)); v != "" && v != "false" {
			return errors.New("redis storage: compression is not supported by this module")
		}
	default:
		return errors.New("redis storage: compression is not supported by this module")
	}
	addrs := make([]string, 0, len(s.Address))
	for _, a := range s.Address {
		addrs = append(addrs, r(a))
	}
	if len(addrs) == 0 {
		hosts, ports := s.Host, s.Port
		if len(hosts) == 0 {
			hosts = []string{DefaultHost}
		}
		if len(ports) == 0 {
			ports = []string{DefaultPort}
		}
		for i, h := range hosts {
			p := ports[len(ports)-1]
			if i < len(ports) {
				p = ports[i]
			}
			addrs = append(addrs, net.JoinHostPort(r(h), r(p)))
		}
	}
	if len(addrs) != 1 {
		return fmt.Errorf("redis storage: %d addresses given; the simple client takes one", len(addrs))
	}
	if _, _, err := net.SplitHostPort(addrs[0]); err != nil {
		return fmt.Errorf("redis storage: address %q: %w", addrs[0], err)
	}
	timeout := DefaultTimeout
	if t := r(s.Timeout); t != "" {
		if n, err := strconv.Atoi(t); err == nil {
			timeout = time.Duration(n) * time.Second
		} else if d, err := time.ParseDuration(t); err == nil {
			timeout = d
		} else {
			return fmt.Errorf("redis storage: timeout %q is neither seconds nor a duration", t)
		}
		if timeout <= 0 {
			return fmt.Errorf("redis storage: timeout %q must be positive", t)
		}
	}
	s.lockTTL = time.Duration(s.LockTTL)
	if s.lockTTL == 0 {
		s.lockTTL = DefaultLockTTL
	}
	if s.lockTTL < 100*time.Millisecond {
		return fmt.Errorf("redis storage: lock_ttl %s is too short (at least 100ms)", s.lockTTL)
	}
	prefix := r(s.KeyPrefix)
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	s.prefix = prefix
	if s.DB < 0 {
		return fmt.Errorf("redis storage: db %d is negative", s.DB)
	}
	opts := &redis.Options{
		Addr:         addrs[0],
		Username:     r(s.Username),
		Password:     r(s.Password),
		DB:           s.DB,
		ClientName:   r(s.ClientName),
		DialTimeout:  timeout,
		ReadTimeout:  timeout,
		WriteTimeout: timeout,
	}
	if s.TLSEnabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: s.TLSInsecure} //nolint:gosec // the user's choice
		host, _, _ := net.SplitHostPort(addrs[0])
		tc.ServerName = host
		pem := r(s.TLSServerCertsPEM)
		if p := r(s.TLSServerCertsPath); p != "" {
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("redis storage: read tls_server_certs_path: %w", err)
			}
			pem += "\n" + string(b)
		}
		if strings.TrimSpace(pem) != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM([]byte(pem)) {
				return errors.New("redis storage: no certificate found in tls_server_certs_pem/path")
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	s.client = redis.NewClient(opts)
	return nil
}

// Cleanup closes the connection pool once no lock is held: a config reload
// must not cut off the renewal (or the release) of a lock taken by work
// still running under the old config, so the last Unlock closes it then.
func (s *Storage) Cleanup() error {
	if s.client == nil {
		return nil
	}
	s.held.mu.Lock()
	s.held.closing = true
	idle := len(s.held.locks) == 0
	s.held.mu.Unlock()
	if idle {
		return s.closeClient()
	}
	return nil
}

func (s *Storage) closeClient() error {
	var err error
	s.held.closeOnce.Do(func() { err = s.client.Close() })
	if err != nil {
		return fmt.Errorf("redis storage: close: %w", err)
	}
	return nil
}

// Close is Cleanup, for use outside Caddy.
func (s *Storage) Close() error { return s.Cleanup() }

// CertMagicStorage returns the storage to Caddy.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) { return s, nil }

// String names the storage (Caddy uses it to tell storages apart).
func (s *Storage) String() string {
	return fmt.Sprintf("RedisStorage:%s/%d/%s", s.client.Options().Addr, s.DB, s.prefix)
}

func (s *Storage) dataKey(key string) string { return s.prefix + ":d:" + key }
func (s *Storage) indexKey() string          { return s.prefix + ":idx" }
func (s *Storage) lockKey(name string) string {
	return s.prefix + ":lock:" + name
}

// normalize turns a certmagic key into its canonical form, as FileStorage
// does by joining it onto a path: no leading, trailing or doubled slashes.
func normalize(key string) string {
	k := path.Clean("/" + key)
	return strings.TrimPrefix(k, "/")
}

// dirRange returns the ZRANGEBYLEX bounds of every key under dir.
func dirRange(dir string) (string, string) {
	if dir == "" {
		return "-", "+"
	}
	// Every key starting with dir+"/" sorts before dir+"0" ('0' is '/'+1).
	return "[" + dir + "/", "(" + dir + "0"
}

// storeScript writes a value and indexes it, refusing (as a file system
// would) a key that is a directory or lies under a stored key.
// KEYS[1] data key, KEYS[2] index; ARGV[1] key, ARGV[2] value, ARGV[3] data prefix, ARGV[4..5] dir range.
var storeScript = redis.NewScript(`
local key = ARGV[1]
local i = 0
while true do
  i = string.find(key, "/", i + 1, true)
  if not i then break end
  if redis.call("EXISTS", ARGV[3] .. string.sub(key, 1, i - 1)) == 1 then
    return redis.error_reply("NOTDIR " .. string.sub(key, 1, i - 1))
  end
end
if #redis.call("ZRANGEBYLEX", KEYS[2], ARGV[4], ARGV[5], "LIMIT", 0, 1) > 0 then
  return redis.error_reply("ISDIR")
end
local t = redis.call("TIME")
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("HSET", KEYS[1], "v", ARGV[2], "m", ms)
redis.call("ZADD", KEYS[2], 0, key)
return 1
`)

// deleteScript removes a key and every key under it, with their index entries.
// KEYS[1] data key, KEYS[2] index; ARGV[1] key, ARGV[2] data prefix, ARGV[3..4] dir range.
var deleteScript = redis.NewScript(`
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
local under = redis.call("ZRANGEBYLEX", KEYS[2], ARGV[3], ARGV[4])
for _, k in ipairs(under) do
  redis.call("DEL", ARGV[2] .. k)
end
redis.call("ZREMRANGEBYLEX", KEYS[2], ARGV[3], ARGV[4])
return #under
`)

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := normalize(key)
	if k == "" {
		return errors.New("redis storage: store: empty key")
	}
	lo, hi := dirRange(k)
	err := storeScript.Run(ctx, s.client, []string{s.dataKey(k), s.indexKey()},
		k, value, s.prefix+":d:", lo, hi).Err()
	if err != nil {
		return fmt.Errorf("redis storage: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key; a missing key is an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	k := normalize(key)
	b, err := s.client.HGet(ctx, s.dataKey(k), "v").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis storage: load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("redis storage: load %s: %w", key, err)
	}
	return b, nil
}

// Delete removes key and, if it is a directory, every key under it. A key
// that does not exist is not an error (certmagic's contract).
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := normalize(key)
	lo, hi := dirRange(k)
	keys := []string{s.dataKey(k), s.indexKey()}
	if err := deleteScript.Run(ctx, s.client, keys, k, s.prefix+":d:", lo, hi).Err(); err != nil {
		return fmt.Errorf("redis storage: delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key is stored or is a directory of stored keys.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// isDir reports whether some stored key lies under dir.
func (s *Storage) isDir(ctx context.Context, dir string) (bool, error) {
	lo, hi := dirRange(dir)
	under, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.indexKey(), Start: lo, Stop: hi, ByLex: true, Count: 1,
	}).Result()
	if err != nil {
		return false, err
	}
	return len(under) > 0, nil
}

// Stat describes key: a stored value (IsTerminal, its size and when it was
// stored) or a directory. A missing key is an error wrapping fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := normalize(key)
	if k != "" {
		pipe := s.client.Pipeline()
		m := pipe.HGet(ctx, s.dataKey(k), "m")
		n := pipe.HStrLen(ctx, s.dataKey(k), "v")
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return certmagic.KeyInfo{}, fmt.Errorf("redis storage: stat %s: %w", key, err)
		}
		if ms, err := m.Int64(); err == nil {
			return certmagic.KeyInfo{
				Key: key, Modified: time.UnixMilli(ms), Size: n.Val(), IsTerminal: true,
			}, nil
		}
	}
	dir, err := s.isDir(ctx, k)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("redis storage: stat %s: %w", key, err)
	}
	if !dir {
		return certmagic.KeyInfo{}, fmt.Errorf("redis storage: stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key}, nil
}

// List returns the keys under dir, each as dir joined with its path below
// it, like FileStorage: not recursive, the immediate children (stored keys
// and implied directories); recursive, every stored key and every
// directory between. A dir with nothing under it is an error wrapping
// fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	d := normalize(dir)
	var out []string
	var err error
	if recursive {
		out, err = s.listAll(ctx, d, dir)
	} else {
		out, err = s.listChildren(ctx, d, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("redis storage: list %s: %w", dir, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("redis storage: list %s: %w", dir, fs.ErrNotExist)
	}
	sort.Strings(out)
	return out, nil
}

// under returns the path of key below dir ("" is the root).
func under(dir, key string) string {
	if dir == "" {
		return key
	}
	return strings.TrimPrefix(key, dir+"/")
}

// listAll returns every key under d and every directory between.
func (s *Storage) listAll(ctx context.Context, d, dir string) ([]string, error) {
	lo, hi := dirRange(d)
	keys, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.indexKey(), Start: lo, Stop: hi, ByLex: true,
	}).Result()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	add := func(rel string) {
		if !seen[rel] {
			seen[rel] = true
			out = append(out, path.Join(dir, rel))
		}
	}
	for _, k := range keys {
		rel := under(d, k)
		for i := 0; i < len(rel); i++ {
			if rel[i] == '/' {
				add(rel[:i])
			}
		}
		add(rel)
	}
	return out, nil
}

// listBatch is how many index entries a non-recursive List reads at once.
const listBatch = 256

// listChildren returns the immediate children of d. It reads the index in
// order and, at each subdirectory, skips past everything under it (all of
// "x/..." sorts before "x0"), so its cost follows the number of children,
// not of everything below them.
func (s *Storage) listChildren(ctx context.Context, d, dir string) ([]string, error) {
	lo, hi := dirRange(d)
	var out []string
	for {
		keys, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: s.indexKey(), Start: lo, Stop: hi, ByLex: true, Count: listBatch,
		}).Result()
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return out, nil
		}
		next := "(" + keys[len(keys)-1]
		for _, k := range keys {
			first, _, isDir := strings.Cut(under(d, k), "/")
			out = append(out, path.Join(dir, first))
			if isDir {
				// Skip the rest of this subdirectory.
				next = "[" + strings.TrimSuffix(k, strings.TrimPrefix(under(d, k), first)) + "0"
				break
			}
		}
		lo = next
	}
}

// Interface guards.
var (
	_ caddy.Module           = (*Storage)(nil)
	_ caddy.Provisioner      = (*Storage)(nil)
	_ caddy.CleanerUpper     = (*Storage)(nil)
	_ caddy.StorageConverter = (*Storage)(nil)
	_ caddyfile.Unmarshaler  = (*Storage)(nil)
	_ certmagic.Storage      = (*Storage)(nil)
	_ certmagic.TryLocker    = (*Storage)(nil)
)

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("redis storage: lock token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
