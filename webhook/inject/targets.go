package inject

import (
	"regexp"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/glaceon/glaceon/flyapi/target"
)

// Target is one Fly destination a pod reaches through the sidecar; the
// sidecar listens on its port on the host's loopback address. The grammar
// is package target's.
type Target = target.Target

// FormatTargets renders targets as a canonical glaceon.fly/target value
// (target.Format).
func FormatTargets(targets []Target) string { return target.Format(targets) }

var (
	dnsLabelPattern   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	regionCodePattern = regexp.MustCompile(`^[a-z]{3}$`)
)

// ParseTargets parses a glaceon.fly/target value with target.ParseList and
// reports every problem as a field error at fldPath; on any problem the
// returned slice is nil.
func ParseTargets(value string, fldPath *field.Path) ([]Target, field.ErrorList) {
	targets, errs := parseTargetList(value, fldPath)
	if len(errs) > 0 {
		return nil, errs
	}
	return targets, nil
}

// parseTargetList is ParseTargets, but it also returns the entries that did
// parse, so that Validate can report conflicts of the good entries too.
func parseTargetList(value string, fldPath *field.Path) ([]Target, field.ErrorList) {
	targets, problems := target.ParseList(value)
	var errs field.ErrorList
	for _, p := range problems {
		errs = append(errs, fieldError(fldPath, p))
	}
	return targets, errs
}

// fieldError is p as the Kubernetes field error of the same kind.
func fieldError(fldPath *field.Path, p *target.Problem) *field.Error {
	switch p.Kind {
	case target.Required:
		return field.Required(fldPath, p.Detail)
	case target.Duplicate:
		return &field.Error{Type: field.ErrorTypeDuplicate, Field: fldPath.String(), BadValue: p.Value, Detail: p.Detail}
	case target.TooMany:
		return &field.Error{Type: field.ErrorTypeTooMany, Field: fldPath.String(), BadValue: p.Count, Detail: p.Detail}
	}
	return field.Invalid(fldPath, p.Value, p.Detail)
}

// ValidateOrgSlug checks a Fly organization slug such as "personal" or
// "acme-339": a lower-case DNS label.
func ValidateOrgSlug(slug string, fldPath *field.Path) field.ErrorList {
	if slug == "" {
		return field.ErrorList{field.Invalid(fldPath, slug,
			"the org slug is empty; set it (see `fly orgs list`) or remove the annotation to use the default org")}
	}
	if len(slug) > 63 || !dnsLabelPattern.MatchString(slug) {
		return field.ErrorList{field.Invalid(fldPath, target.Shorten(slug),
			"not a Fly org slug: use the slug `fly orgs list` shows (lower-case letters, digits and '-')")}
	}
	return nil
}

// ValidateRegion checks a Fly region code such as "iad" or "ams".
func ValidateRegion(code string, fldPath *field.Path) field.ErrorList {
	if !regionCodePattern.MatchString(code) {
		return field.ErrorList{field.Invalid(fldPath, target.Shorten(code),
			"not a Fly region code: use three lower-case letters such as iad or ams (see `fly platform regions`), or remove the annotation for the default")}
	}
	return nil
}
