{
	"subject": {},
	"extensions": [
		{"id": "2.5.29.17", "critical": true, "value": {{ toJson .AK.SubjectAltName }}}
	],
	"keyUsage": ["digitalSignature"],
	"unknownExtKeyUsage": ["2.23.133.8.3"],
	"basicConstraints": {"isCA": false}
}
