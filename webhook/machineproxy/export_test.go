package machineproxy

// Exported for the external integration test (machineproxy_test), which
// cannot be in this package: it runs the whole manager, and package manager
// imports this one.
var (
	ConflictRetry   = &conflictRetry
	NewMachineProxy = newMachineProxy
	ServiceDNSName  = serviceDNSName
	WithName        = withName
	WithOrg         = withOrg
	WithPort        = withPort
	WithRegion      = withRegion
	WithReplicas    = withReplicas
	WithTarget      = withTarget
)
