import Foundation

/// bundle.json as written by `mobilellm-export bundle` (schema:
/// mobilellm_export/schemas/bundle-manifest.schema.json). Every file is found through it.
struct BundleManifest: Decodable {
    static let fileName = "bundle.json"
    static let directory = "model"

    struct Generation: Decodable {
        let maxNewTokens: Int
        let temperature: Double
        enum CodingKeys: String, CodingKey {
            case maxNewTokens = "max_new_tokens"
            case temperature
        }
    }

    struct Files: Decodable {
        let package: String?  // Core ML .mlpackage (backend coreml)
        let aimodel: String?  // Core AI .aimodel (backend coreai)
        let tokenizer: String
        enum CodingKeys: String, CodingKey {
            case package
            case aimodel
            case tokenizer
        }
    }

    struct FileCheck: Decodable {
        let sha256: String
        let bytes: Int
        enum CodingKeys: String, CodingKey {
            case sha256
            case bytes
        }
    }

    let schemaVersion: Int
    let modelName: String
    let backend: String
    let scheme: String
    let contextLength: Int
    let bosId: Int
    let eosIds: [Int]
    let generation: Generation
    let files: Files
    let integrity: [String: FileCheck]
    let totalBytes: Int

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case modelName = "model_name"
        case backend
        case scheme
        case contextLength = "context_length"
        case bosId = "bos_id"
        case eosIds = "eos_ids"
        case generation
        case files
        case integrity
        case totalBytes = "total_bytes"
    }

    /// The bundle folder inside the app, and its manifest.
    static func load(from bundle: Bundle = .main) throws -> (BundleManifest, URL) {
        guard let folder = bundle.url(forResource: directory, withExtension: nil) else {
            throw DemoError.missing("\(directory)/ is not in the app; run `mobilellm-export bundle ... --app ios`")
        }
        let data = try Data(contentsOf: folder.appendingPathComponent(fileName))
        let manifest = try JSONDecoder().decode(BundleManifest.self, from: data)
        guard manifest.schemaVersion == 1 else { throw DemoError.missing("unsupported bundle schema_version") }
        guard ["coreml", "coreai"].contains(manifest.backend) else {
            throw DemoError.missing("this app runs Core ML and Core AI bundles; \(manifest.backend) needs ExecuTorch's Swift package")
        }
        // A Core ML package is compiled by Xcode; check the tokenizer, which is copied byte for byte.
        let tokenizerURL = folder.appendingPathComponent(manifest.files.tokenizer)
        if let check = manifest.integrity[manifest.files.tokenizer],
           let size = try? FileManager.default.attributesOfItem(atPath: tokenizerURL.path)[.size] as? Int,
           size != check.bytes {
            throw DemoError.missing("\(manifest.files.tokenizer) has \(size) bytes, bundle.json says \(check.bytes)")
        }
        return (manifest, folder)
    }
}

enum DemoError: Error, LocalizedError {
    case missing(String)
    var errorDescription: String? {
        switch self { case .missing(let why): return why }
    }
}
