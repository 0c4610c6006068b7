package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/replicator/replicator/relation"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment override: source.url is
// REPLICATOR_SOURCE_URL, kafka.sasl.password is REPLICATOR_KAFKA_SASL_PASSWORD.
const EnvPrefix = "REPLICATOR"

// flagKeys maps the command-line flags defined by [AddFlags] to their keys.
var flagKeys = map[string]string{
	"data-dir":      KeyDataDir,
	"log-level":     KeyLogLevel,
	"source-url":    KeySourceURL,
	"kafka-brokers": KeyKafkaBrokers,
	"registry-url":  KeyRegistryURL,
	// run and sink of one config file each need their own address.
	"metrics-listen": KeyMetricsListen,
}

// AddFlags defines the flags that override config keys. Precedence: flag >
// environment > file > default.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("data-dir", "", "override "+KeyDataDir)
	fs.String("log-level", "", "override "+KeyLogLevel+" (debug|info|warn|error)")
	fs.String("source-url", "", "override "+KeySourceURL)
	fs.StringSlice("kafka-brokers", nil, "override "+KeyKafkaBrokers)
	fs.String("registry-url", "", "override "+KeyRegistryURL)
	fs.String("metrics-listen", "", "override "+KeyMetricsListen)
}

func setDefaults(v *viper.Viper) {
	v.SetDefault(KeyDataDir, "./data")
	v.SetDefault(KeyLogLevel, "info")
	v.SetDefault(KeyLogFormat, "text")
	v.SetDefault(KeySourceURL, "")
	v.SetDefault(KeySourceSlot, "replicator")
	v.SetDefault(KeySourcePublication, "replicator")
	v.SetDefault(KeySourceSnapshot, SnapshotInitial)
	v.SetDefault(KeySourceStatus, "10s")
	v.SetDefault(KeySnapshotWorkers, 2)
	v.SetDefault(KeySnapshotChunkRows, 50000)
	v.SetDefault(KeySnapshotProgress, "10s")
	v.SetDefault(KeySnapshotGCPercent, 200)
	v.SetDefault(KeySinkGCPercent, DefaultSinkGCPercent)
	v.SetDefault(KeySourceNumeric, "string")
	v.SetDefault(KeySourceReconnectInitial, "500ms")
	v.SetDefault(KeySourceReconnectMax, "30s")
	v.SetDefault(KeySourceReconnectGiveUp, "0s")
	v.SetDefault(KeyKafkaBrokers, []string{})
	v.SetDefault(KeyKafkaListen, "127.0.0.1:9092")
	v.SetDefault(KeyKafkaClientID, "replicator")
	v.SetDefault(KeyKafkaPartitions, 6)
	v.SetDefault(KeyKafkaReplication, -1)
	v.SetDefault(KeyKafkaCompression, "none")
	v.SetDefault(KeyKafkaMaxBuffered, 100000)
	v.SetDefault(KeyKafkaLinger, "2ms") // see docs/CONFIG.md
	v.SetDefault(KeyKafkaMaxMessage, DefaultMaxMessageBytes)
	v.SetDefault(KeyKafkaTLSEnabled, false)
	v.SetDefault(KeyKafkaTLSCA, "")
	v.SetDefault(KeyKafkaTLSCert, "")
	v.SetDefault(KeyKafkaTLSKey, "")
	v.SetDefault(KeyKafkaTLSInsecure, false)
	v.SetDefault(KeyKafkaSASLMechanism, "")
	v.SetDefault(KeyKafkaSASLUser, "")
	v.SetDefault(KeyKafkaSASLPassword, "")
	v.SetDefault(KeyRegistryURL, "")
	v.SetDefault(KeyRegistryListen, "127.0.0.1:8081")
	v.SetDefault(KeyRegistryUser, "")
	v.SetDefault(KeyRegistryPassword, "")
	v.SetDefault(KeyRegistryCA, "")
	v.SetDefault(KeyRegistryCert, "")
	v.SetDefault(KeyRegistryKey, "")
	setOpsDefaults(v)
}

// MaxFileSize bounds the config file: a config is a few KiB, and reading
// /dev/zero or a multi-GiB file by mistake must fail at once, not fill memory.
const MaxFileSize = 4 << 20

// Load reads the YAML file at path (optional: "" means defaults, env and
// flags only), applies REPLICATOR_* environment overrides and the flags set
// in fs (may be nil), and validates the result for `run` (source.url and
// entities required; read_models checked when present). Every problem is
// reported at once, each naming its key.
func Load(path string, fs *pflag.FlagSet) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = readFile(path); err != nil {
			return nil, err
		}
	}
	return load(data, path != "", fs, (*Config).Validate)
}

// LoadSink is [Load] for `replicator sink`: read_models are required,
// source.url and entities are not (a sink-only file holds kafka, registry
// and read_models; entities, when present, name the sources' topics).
func LoadSink(path string, fs *pflag.FlagSet) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = readFile(path); err != nil {
			return nil, err
		}
	}
	return load(data, path != "", fs, (*Config).ValidateSink)
}

// LoadAny is [Load] for the commands that read either file (`check`,
// `status`): a file without source.url and entities but with read_models
// is a sink-only file and is validated as [LoadSink] validates it
// (sinkOnly true), any other as [Load]. Deciding before validating keeps
// a sink-only file's own problems (a bad store URL) from being reported
// as the source.url and entities it never meant to have.
func LoadAny(path string, fs *pflag.FlagSet) (cfg *Config, sinkOnly bool, err error) {
	var data []byte
	if path != "" {
		if data, err = readFile(path); err != nil {
			return nil, false, err
		}
	}
	cfg, err = load(data, path != "", fs, func(c *Config) error {
		if c.Source.URL == "" && len(c.Entities) == 0 && len(c.ReadModels) > 0 {
			sinkOnly = true
			return c.ValidateSink()
		}
		return c.Validate()
	})
	return cfg, sinkOnly, err
}

// readFile reads a config file, refusing what is not a regular file (a
// device, a FIFO, a directory) or larger than MaxFileSize before reading it.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("config file %s does not exist", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("config file %s is not a regular file (%s): pass the path of a YAML file", path, st.Mode().Type())
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("config file %s is %d bytes, more than the %d a config may have: is it the right file?", path, st.Size(), MaxFileSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	defer f.Close()
	// The file may have grown since Stat: read one byte past the limit to tell.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config file %s is more than the %d bytes a config may have: is it the right file?", path, MaxFileSize)
	}
	return data, nil
}

// load decodes YAML data (if hasFile), the environment and flags into a
// Config validated by validate. It never panics, whatever data holds (FuzzLoad).
func load(data []byte, hasFile bool, fs *pflag.FlagSet, validate func(*Config) error) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if fs != nil {
		for name, key := range flagKeys {
			if f := fs.Lookup(name); f != nil {
				if err := v.BindPFlag(key, f); err != nil {
					return nil, fmt.Errorf("bind flag --%s: %w", name, err)
				}
			}
		}
	}
	if hasFile {
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
	}
	unknown := unknownKeys(v)
	var models []ReadModel
	var modelErr error
	if hasFile {
		models, modelErr = parseReadModels(data)
	}
	unknown = errors.Join(unknown, modelErr)
	var cfg Config
	err := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		// unknownKeys has named them already, with the full key path.
		dc.ErrorUnused = false
		// strictScalars does the conversions weak typing did, strictly.
		dc.WeaklyTypedInput = false
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToSliceHookFunc(","),
			strictScalars,
		)
	})
	if err != nil {
		return nil, errors.Join(unknown, decodeErrors(err))
	}
	zero := explicitZeroPartitions(v, &cfg)
	cfg.applyEntityDefaults()
	cfg.ReadModels = models
	cfg.applyReadModelDefaults()
	if err := errors.Join(unknown, zero, validate(&cfg)); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// unknownKeys rejects keys the Config does not define, naming each one, so a
// typo never silently falls back to a default.
func unknownKeys(v *viper.Viper) error {
	known := map[string]bool{}
	collectKeys(reflect.TypeOf(Config{}), "", known)
	sections := map[string]bool{}
	for k := range known {
		for i, c := range k {
			if c == '.' {
				sections[k[:i]] = true
			}
		}
	}
	var errs []error
	for _, k := range v.AllKeys() {
		if sections[k] {
			// A section given a value that is not a mapping: `kafka:`
			// alone, its keys commented out, is null and keeps the
			// defaults; another value fails to decode, naming the key.
			// Either way the key is known.
			continue
		}
		if !known[k] && !strings.HasPrefix(k, KeyEntities+".") && k != KeyReadModels && !strings.HasPrefix(k, KeyReadModels+".") {
			errs = append(errs, fmt.Errorf("unknown config key %s", k))
		}
	}
	entityKeys := map[string]bool{}
	collectKeys(reflect.TypeOf(Entity{}), "", entityKeys)
	if raw, ok := v.Get(KeyEntities).([]any); ok {
		for i, e := range raw {
			m, ok := e.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf("%s[%d]: want a mapping with at least table:", KeyEntities, i))
				continue
			}
			var names []string
			for k := range m {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				if !entityKeys[strings.ToLower(k)] {
					errs = append(errs, fmt.Errorf("unknown config key %s[%d].%s (known: name, table, topic, key, columns, as_string, partitions, on_truncate, compatibility)", KeyEntities, i, k))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// explicitZeroPartitions reports an entity that sets partitions: 0, which
// would otherwise read as unset and silently become kafka.partitions.
func explicitZeroPartitions(v *viper.Viper, cfg *Config) error {
	raw, _ := v.Get(KeyEntities).([]any)
	var errs []error
	for i, e := range raw {
		m, ok := e.(map[string]any)
		if !ok || i >= len(cfg.Entities) {
			continue
		}
		for k := range m {
			if strings.EqualFold(k, "partitions") && cfg.Entities[i].Partitions == 0 {
				errs = append(errs, fmt.Errorf("%s[%d].partitions: 0 must be between 1 and %d (leave it out for %s)", KeyEntities, i, MaxPartitions, KeyKafkaPartitions))
			}
		}
	}
	return errors.Join(errs...)
}

func collectKeys(t reflect.Type, prefix string, into map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		if f.Type.Kind() == reflect.Struct && f.Type.String() != "time.Duration" {
			collectKeys(f.Type, key+".", into)
			continue
		}
		into[key] = true
	}
}

func (c *Config) applyEntityDefaults() {
	for i := range c.Entities {
		e := &c.Entities[i]
		if e.Name == "" && e.Table != "" {
			e.Name = defaultEntityName(e.Table)
		}
		if e.Topic == "" {
			e.Topic = e.Name
		}
		if e.Partitions == 0 {
			e.Partitions = c.Kafka.Partitions
		}
		if e.OnTruncate == "" {
			e.OnTruncate = OnTruncateTombstone
		}
		if e.Compatibility == "" {
			e.Compatibility = "full"
		}
	}
}

// defaultEntityName is the table part of "schema.table" as PostgreSQL
// reads it; "" when the name does not parse (Validate reports that).
func defaultEntityName(table string) string {
	_, name, err := relation.ParseQualifiedName(table)
	if err != nil {
		return ""
	}
	return name
}
