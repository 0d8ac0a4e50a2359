// Package locate is the client-location step of the GeoDNS answer chain: it maps a
// client address (the EDNS Client Subnet when present, else the query's source) to a
// client region, through CIDR overrides first and a MaxMind database second.
package locate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/meridianhq/meridian/inventory"
)

// Locator maps addresses to client regions. It is immutable and safe for concurrent use.
type Locator struct {
	db         *maxminddb.Reader // nil: CIDR overrides only
	cidrs      []cidrRule        // longest prefix first
	countries  map[string]string // ISO country -> region
	continents map[string]string // continent code -> region
}

type cidrRule struct {
	prefix netip.Prefix
	region string
}

// Result is where a client is and how far that verdict reaches: Scope is the prefix
// length the answer holds for, sent back as the ECS scope.
type Result struct {
	Region  string // "" when no rule matched
	Country string
	Scope   int
}

// geoRecord is the part of a GeoIP2/GeoLite2 City or Country record we read.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
}

// New builds a locator over the inventory's client regions. dbPath may be empty.
// A country or CIDR claimed by two regions is a configuration error.
func New(regions []inventory.ClientRegion, dbPath string) (*Locator, error) {
	l := &Locator{countries: map[string]string{}, continents: map[string]string{}}
	if dbPath != "" {
		db, err := maxminddb.Open(dbPath)
		if err != nil {
			return nil, fmt.Errorf("geoip database %s: %w", dbPath, err)
		}
		if err := hasLocations(db); err != nil {
			db.Close()
			return nil, fmt.Errorf("geoip database %s: %w", dbPath, err)
		}
		l.db = db
	}
	claim := func(m map[string]string, what, code, region string) error {
		code = strings.ToUpper(code)
		if prev, ok := m[code]; ok && prev != region {
			return fmt.Errorf("client regions %q and %q both claim %s %s", prev, region, what, code)
		}
		m[code] = region
		return nil
	}
	for _, r := range regions {
		for _, c := range r.Countries {
			if err := claim(l.countries, "country", c, r.Name); err != nil {
				return nil, err
			}
		}
		for _, c := range r.Continents {
			if err := claim(l.continents, "continent", c, r.Name); err != nil {
				return nil, err
			}
		}
		for _, p := range r.CIDRs {
			l.cidrs = append(l.cidrs, cidrRule{p.Masked(), r.Name})
		}
	}
	slices.SortStableFunc(l.cidrs, func(a, b cidrRule) int { return b.prefix.Bits() - a.prefix.Bits() })
	return l, nil
}

// locationProbe is how many networks hasLocations decodes: enough to see past a few
// odd records, few enough to keep start-up and reload instant on a full database.
const locationProbe = 64

// hasLocations refuses a database whose records carry no country or continent (an ASN,
// ISP or connection-type database): with one, every client would silently land in the
// default region. The records are checked, not the type name, since third-party
// databases name their types freely.
func hasLocations(db *maxminddb.Reader) error {
	n := 0
	for res := range db.Networks() {
		var rec geoRecord
		if err := res.Decode(&rec); err == nil && (rec.Country.ISOCode != "" || rec.Continent.Code != "") {
			return nil
		}
		if n++; n == locationProbe {
			break
		}
	}
	return fmt.Errorf("database_type %q has no country or continent data in its first %d networks: want a City or Country database (GeoIP2/GeoLite2 City or Country, or one with the same country.iso_code and continent.code fields)",
		db.Metadata.DatabaseType, n)
}

// Close releases the database.
func (l *Locator) Close() error {
	if l.db == nil {
		return nil
	}
	return l.db.Close()
}

// Locate finds the region of addr; sourceBits is the client's ECS source prefix length
// (or the full address length without ECS), the floor of the returned scope's meaning.
func (l *Locator) Locate(addr netip.Addr, sourceBits int) Result {
	addr = addr.Unmap()
	for _, c := range l.cidrs {
		if c.prefix.Contains(addr) {
			return Result{Region: c.region, Scope: c.prefix.Bits()}
		}
	}
	res := Result{Scope: sourceBits}
	if l.db == nil {
		return res
	}
	lr := l.db.Lookup(addr)
	if !lr.Found() {
		if p := lr.Prefix(); p.IsValid() {
			res.Scope = p.Bits()
		}
		return res
	}
	var rec geoRecord
	if err := lr.Decode(&rec); err != nil {
		return res // a damaged record locates nobody; the default region answers
	}
	res.Scope = lr.Prefix().Bits()
	res.Country = rec.Country.ISOCode
	if r, ok := l.countries[rec.Country.ISOCode]; ok && rec.Country.ISOCode != "" {
		res.Region = r
	} else if r, ok := l.continents[rec.Continent.Code]; ok && rec.Continent.Code != "" {
		res.Region = r
	}
	return res
}
